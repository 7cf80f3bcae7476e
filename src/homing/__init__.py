"""Homing: quantitative tracking of therapeutic cells in longitudinal mouse PET/SPECT studies.

The package holds all science and I/O; the Snakemake workflow only wires it together.
"""

__version__ = "0.1.0"


class HomingError(Exception):
    """An error in the user's input that Homing can explain: names file, field and fix."""
