"""Kill and resume: a run killed with SIGKILL mid-way resumes, after `snakemake --unlock`,
to the same tables as an uninterrupted run (README, "An interrupted run")."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from ..conftest import SNAKEMAKE_ENV, local_snakemake_command, snakemake, write_subset

pytestmark = pytest.mark.workflow

#: One scan is enough to kill a run mid-registration and resume it.
ANIMAL, SESSIONS = "EX01", ("d0",)


def _tables(work: Path) -> dict[str, pd.DataFrame]:
    return {
        s: pd.read_csv(
            work / f"results/sub-{ANIMAL}/ses-{s}/pet/sub-{ANIMAL}_ses-{s}_organs.tsv", sep="\t"
        )
        for s in SESSIONS
    }


def test_sigkill_then_unlock_resumes_to_the_same_tables(full_run, demo_study, tmp_path):
    cfg = write_subset(demo_study, tmp_path / "study", {ANIMAL: SESSIONS})
    work = tmp_path / "work"
    work.mkdir()
    cmd = local_snakemake_command(work, cfg) + ["--cores", "2"]
    # Killed while the atlas registration runs: after the CT is ingested.
    started = (
        work
        / f"results/sub-{ANIMAL}/ses-{SESSIONS[0]}/anat/sub-{ANIMAL}_ses-{SESSIONS[0]}_ct.nii.gz"
    )
    with open(tmp_path / "killed.log", "w") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=SNAKEMAKE_ENV, start_new_session=True
        )
        deadline = time.monotonic() + 600
        while not started.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(3)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not (work / f"results/sub-{ANIMAL}/sub-{ANIMAL}_organs.tsv").exists()

    # Snakemake keeps its lock after SIGKILL: the plain re-run refuses, naming --unlock.
    again = snakemake(work, "--cores", "2", configfile=cfg)
    assert again.returncode != 0
    assert "--unlock" in again.stdout + again.stderr
    assert snakemake(work, "--unlock", configfile=cfg).returncode == 0
    resumed = snakemake(work, "--cores", "2", configfile=cfg)
    assert resumed.returncode == 0, resumed.stderr[-4000:]

    for session, table in _tables(work).items():
        uninterrupted = _tables(full_run)[session]
        assert list(table.columns) == list(uninterrupted.columns)
        pd.testing.assert_frame_equal(table, uninterrupted, check_exact=False, rtol=1e-9)
