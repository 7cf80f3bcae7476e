"""Shared fixtures: paths to the repository and to ../shared/data, and the demo study."""

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
DIGIMOUSE_JSON = SHARED_DATA / "atlas" / "digimouse" / "digimouse.json"


@pytest.fixture(scope="session")
def digimouse_json() -> Path:
    if not DIGIMOUSE_JSON.is_file():
        pytest.skip(f"shared data folder absent ({DIGIMOUSE_JSON})")
    return DIGIMOUSE_JSON


@pytest.fixture(scope="session")
def demo_study(tmp_path_factory, digimouse_json) -> Path:
    """The full demo study, generated once per test session (under a minute)."""
    from homing import simulate

    out = tmp_path_factory.mktemp("demo") / "demo"
    simulate.simulate("demo", out, digimouse_json)
    simulate.write_config(out, digimouse_json)
    return out


@pytest.fixture(scope="session")
def quirks_study(tmp_path_factory, digimouse_json) -> Path:
    """The simulator's `quirks` design (every scanner metadata variant), once per session."""
    from homing import simulate

    out = tmp_path_factory.mktemp("quirks") / "quirks"
    simulate.simulate("quirks", out, digimouse_json)
    return out
