"""What the benches that run the workflow share: the atlas they default to, and one Snakemake
run of a target in a working directory with the default profile."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: The atlas copy beside the checkout (../shared), as the tests and demo.sh use it.
DEFAULT_ATLAS = str(REPO.parent / "shared/data/atlas/digimouse/digimouse.json")


def run_workflow(work: Path, configfile: Path, target: str, cores: int) -> None:
    """``snakemake TARGET`` in ``work`` with the default profile and ``configfile`` on
    ``cores`` cores; raises CalledProcessError when the run fails."""
    subprocess.run(
        [
            sys.executable, "-m", "snakemake", target,
            "--snakefile", str(REPO / "workflow" / "Snakefile"), "--directory", str(work),
            "--workflow-profile", str(REPO / "workflow" / "profiles" / "default"),
            "--configfile", str(configfile), "--cores", str(cores), "--quiet",
        ],
        check=True,
    )  # fmt: skip
