"""The one exception Homing raises for bad input."""


class HomingError(Exception):
    """An error in the user's input that Homing can explain: names file, field and fix."""
