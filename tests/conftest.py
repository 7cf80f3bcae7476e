"""Shared fixtures: paths to the repository and to ../shared/data, and the demo study."""

import os
import subprocess
import sys
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


#: Environment of every Snakemake the tests start: BLAS single-threaded, for reproducibility.
SNAKEMAKE_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


def snakemake_command(workdir: Path) -> list[str]:
    """Snakemake on the repository's workflow, writing into ``workdir``."""
    return [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir)]


def snakemake(workdir: Path, *args: str, configfile: Path | None = None):
    """Snakemake on the repository's workflow with the local (default) profile."""
    cmd = snakemake_command(workdir) + [
        "--workflow-profile",
        str(REPO / "workflow" / "profiles" / "default"),
    ]
    if configfile is not None:
        cmd += ["--configfile", str(configfile)]
    return subprocess.run(
        cmd + list(args), capture_output=True, text=True, env=SNAKEMAKE_ENV, timeout=3000
    )


@pytest.fixture(scope="session")
def full_run(demo_study, tmp_path_factory):
    """The whole demo study run locally, once per test session (several minutes): checked
    against the demo's truth in test_workflow.py, and against the SLURM run in
    test_slurm.py."""
    work = tmp_path_factory.mktemp("run")
    res = snakemake(
        work, "--cores", str(min(os.cpu_count() or 1, 2)), configfile=demo_study / "config.yaml"
    )
    if res.returncode != 0:
        logs = "\n".join(
            f"--- {p}\n{p.read_text()[-3000:]}"
            for p in sorted((work / "logs").rglob("*.log"))
            if "ERROR" in p.read_text()
        )
        pytest.fail(f"workflow failed:\n{res.stderr[-5000:]}\n{logs}")
    return work
