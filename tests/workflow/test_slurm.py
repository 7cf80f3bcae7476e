"""A study through a real SLURM cluster, with the profile in workflow/profiles/slurm.

Needs a running SLURM (CI starts a single-node one with tests/slurm/up.sh). Without one
these tests are skipped, unless HOMING_REQUIRE_SLURM=1, which turns the skip into a
failure (CI sets it, so a cluster that did not come up cannot pass unnoticed).

What is checked:

* every job that is not a local rule went through sbatch: the Snakemake log has one
  "submitted with SLURM jobid" line per rule job and one per group job;
* SLURM's own accounting (sacct) knows every one of those job ids, each COMPLETED;
* every result table (results/**/*.tsv) equals the local demo run's rows for the same scans:
  same rows and text, numbers within a relative 1e-6 (registration is seeded and
  single-thread).

The study is the small one (conftest SMALL_STUDY: 4 scans of 3 animals of the demo, with
both kinds of registration, both labelling methods and the control), not a second full
demo: the local full run already checks the whole demo against its truth.

The partition and account come from HOMING_SLURM_PARTITION / HOMING_SLURM_ACCOUNT, else
the cluster's default partition and the user's first account in sacctmgr. The run takes
a few minutes on a 2-core machine.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from .. import slurm_cluster as cluster_
from ..conftest import SMALL_STUDY, background_run, start_slurm_run

pytestmark = pytest.mark.workflow

RTOL = 1e-6
LOCAL_RULES = {
    "all",
    "fetch_atlas",
    "study_table",
    "registration_qc_table",
    "bids_dataset_description",
    "tidy_table",
    "overview_page",
}
SUBMITTED = re.compile(
    r"^Job (?P<job>\S+) has been submitted with SLURM jobid (?P<slurm>\d+) "
    r"\(log: (?P<log>.+)\)\.\s*$",
    re.M,
)


@pytest.fixture(scope="session")
def slurm_cluster() -> dict:
    """The running cluster's partition and account; skip (or fail) without one."""
    problem = cluster_.problem()
    if problem:
        msg = f"SLURM is not available: {problem}. Start one with `bash tests/slurm/up.sh`."
        if os.environ.get("HOMING_REQUIRE_SLURM") == "1":
            pytest.fail(f"HOMING_REQUIRE_SLURM=1 but {msg}", pytrace=False)
        pytest.skip(msg)
    return cluster_.info()


def _failure_report(work: Path, text: str) -> str:
    parts = [text[-6000:]]
    for p in sorted((work / "logs").rglob("*.log")):
        body = p.read_text(errors="replace")
        if "Error" in body or "ERROR" in body:
            parts.append(f"--- {p}\n{body[-3000:]}")
    for p in sorted((work / ".snakemake" / "slurm_logs").rglob("*.log")):
        body = p.read_text(errors="replace")
        if "Error" in body or "error" in body:
            parts.append(f"--- {p}\n{body[-3000:]}")
    return "\n".join(parts)


@pytest.fixture(scope="module")
def slurm_run(slurm_cluster, demo_study, tmp_path_factory) -> tuple[Path, str]:
    """The small study run through SLURM with a copy of the repository's SLURM profile in
    which only the partition and account placeholders are filled in (started in the
    background when the demo study was made; conftest.start_needed_runs)."""
    run = background_run(
        "slurm_run", lambda: start_slurm_run(demo_study, tmp_path_factory, slurm_cluster)
    )
    res = run.wait()
    if res.returncode != 0:
        cluster_.cancel(res.stdout)  # a Snakemake stopped by the timeout leaves jobs queued
        pytest.fail(f"SLURM run failed:\n{_failure_report(run.workdir, res.stdout)}")
    assert re.search(r"\(100%\) done", res.stdout), res.stdout[-3000:]
    return run.workdir, res.stdout


def _planned(log: str) -> tuple[dict[str, int], dict[str, int], list[str]]:
    """From a Snakemake log: rule jobs (not in a group) per rule, group jobs per group, and
    local rules run on the submit host."""
    rules: dict[str, int] = {}
    groups: dict[str, int] = {}
    for name in re.findall(r"^rule (\w+):$", log, re.M):
        rules[name] = rules.get(name, 0) + 1
    for name in re.findall(r"Group job (\w+) \(jobs in", log):
        groups[name] = groups.get(name, 0) + 1
    local = re.findall(r"^localrule (\w+):$", log, re.M)
    return rules, groups, local


def test_every_job_went_through_sbatch(slurm_run):
    work, log = slurm_run
    rules, groups, local = _planned(log)
    assert rules and groups, "no rule or group job in the Snakemake log"
    # Only the rules the workflow declares local run on the submit host (fetching the
    # atlas needs the login node's network; the study-wide tables are a few KB).
    assert set(local) == LOCAL_RULES, f"rules run on the submit host: {local}"
    submitted_rules: dict[str, int] = {}
    submitted_groups: dict[str, int] = {}
    ids = []
    for m in SUBMITTED.finditer(log):
        ids.append(m.group("slurm"))
        kind = Path(m.group("log")).relative_to(work / ".snakemake" / "slurm_logs").parts[0]
        if kind.startswith("rule_"):
            name = kind.removeprefix("rule_")
            submitted_rules[name] = submitted_rules.get(name, 0) + 1
        else:
            # group_<group>_<its rules>; the longest group name that fits
            name = max((g for g in groups if kind.startswith(f"group_{g}_")), key=len)
            submitted_groups[name] = submitted_groups.get(name, 0) + 1
        slurm_log = Path(m.group("log"))
        assert slurm_log.is_file(), f"SLURM wrote no log {slurm_log}"
    assert submitted_rules == rules
    assert submitted_groups == groups
    assert len(set(ids)) == len(ids) == sum(rules.values()) + sum(groups.values())
    # Snakemake's own log file of the run says the same.
    own = sorted((work / ".snakemake" / "log").glob("*.snakemake.log"))
    assert own and all(f"SLURM jobid {i} " in own[-1].read_text() for i in ids)


def test_slurm_accounting_has_every_job_completed(slurm_run, slurm_cluster):
    if not slurm_cluster["accounting"]:
        pytest.skip("the cluster keeps no accounting (no slurmdbd): sacct knows no jobs")
    _, log = slurm_run
    ids = sorted({m.group("slurm") for m in SUBMITTED.finditer(log)}, key=int)
    res = cluster_.run("sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j", ",".join(ids))
    assert res.returncode == 0, res.stderr
    states = dict(line.split("|", 1) for line in res.stdout.splitlines() if line.strip())
    assert sorted(states, key=int) == ids, f"sacct does not know every job:\n{res.stdout}"
    bad = {j: s for j, s in states.items() if s != "COMPLETED"}
    assert not bad, f"SLURM jobs not COMPLETED: {bad}"


def _tables(root: Path) -> dict[str, Path]:
    """The run's result tables, but the cohort statistics: they compare cohorts, and the
    small study's cohorts are not the demo's (their own tests: tests/report)."""
    return {
        str(p.relative_to(root)): p
        for p in sorted((root / "results").rglob("*.tsv"))
        if "statistics" not in p.relative_to(root).parts
    }


def _read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", keep_default_na=False, dtype=str)


def test_result_tables_equal_the_local_run(slurm_run, full_run):
    """Each table of the SLURM run equals the local demo run's rows for the same scans
    (tables spanning scans, per animal or study, are compared on those rows)."""
    work, _ = slurm_run
    local, cluster = _tables(full_run), _tables(work)
    assert "results/study_organs.tsv" in cluster
    assert set(cluster) <= set(local), sorted(set(cluster) - set(local))
    scans = {(a, s) for a, sessions in SMALL_STUDY.items() for s in sessions}
    for a, s in scans:
        assert f"results/sub-{a}/ses-{s}/pet/sub-{a}_ses-{s}_organs.tsv" in cluster
    for rel in cluster:
        a, b = _read(local[rel]), _read(cluster[rel])
        if "session_id" in a.columns:
            rows = [(x, y) in scans for x, y in zip(a.animal_id, a.session_id, strict=True)]
            a = a[rows].reset_index(drop=True)
        assert list(a.columns) == list(b.columns), rel
        assert a.shape == b.shape, rel
        assert len(b), f"{rel} is empty"
        for col in a.columns:
            na = pd.to_numeric(a[col].replace("", np.nan), errors="coerce")
            nb = pd.to_numeric(b[col].replace("", np.nan), errors="coerce")
            numeric = na.notna() | (a[col] == "")
            if numeric.all() and (nb.notna() | (b[col] == "")).all():
                assert np.allclose(na, nb, rtol=RTOL, atol=1e-12, equal_nan=True), (
                    f"{rel} column {col} differs:\n"
                    + pd.DataFrame({"local": a[col], "slurm": b[col]})[na != nb].to_string()
                )
            else:
                assert (a[col] == b[col]).all(), f"{rel} column {col} differs"
