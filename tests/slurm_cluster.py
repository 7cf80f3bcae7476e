"""The SLURM cluster the tests submit to (CI starts a single-node one with tests/slurm/up.sh):
whether one is up, its partition and account, and the repository's SLURM profile filled in
for it. Used by conftest.py, which starts the SLURM run early, and by test_slurm.py."""

from __future__ import annotations

import getpass
import os
import re
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "workflow" / "profiles" / "slurm" / "profile.yaml"
PLACEHOLDERS = {"slurm_partition": "EDIT_ME_partition", "slurm_account": "EDIT_ME_account"}


def run(*cmd: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def problem() -> str | None:
    """Why SLURM cannot be used here, or None when a node is up."""
    if shutil.which("sinfo") is None:
        return "no SLURM client (sinfo) on PATH"
    try:
        res = run("sinfo", "-h", "-o", "%t")
    except subprocess.TimeoutExpired:
        return "sinfo did not answer within 60 s"
    if res.returncode != 0:
        return f"sinfo failed: {(res.stderr or res.stdout).strip()}"
    states = res.stdout.split()
    if not any(s.rstrip("*~#") in ("idle", "mix", "alloc", "comp") for s in states):
        return f"no SLURM node is up (node states: {states or 'none'})"
    return None


def accounting_enabled() -> bool:
    res = run("scontrol", "show", "config")
    m = re.search(r"^AccountingStorageType\s*=\s*(\S+)", res.stdout, re.M)
    return bool(m) and m.group(1) != "accounting_storage/none"


def info() -> dict:
    """The running cluster's partition and account (HOMING_SLURM_PARTITION /
    HOMING_SLURM_ACCOUNT, else the default partition and the user's first account), and
    whether it keeps accounting. Call only when :func:`problem` is None."""
    partition = os.environ.get("HOMING_SLURM_PARTITION")
    if not partition:
        parts = run("sinfo", "-h", "-o", "%P").stdout.split()
        partition = next((p for p in parts if p.endswith("*")), parts[0]).rstrip("*")
    account = os.environ.get("HOMING_SLURM_ACCOUNT")
    accounting = accounting_enabled()
    if not account and accounting:
        res = run(
            "sacctmgr", "-n", "-P", "show", "assoc", f"user={getpass.getuser()}", "format=account"
        )
        account = next((a for a in res.stdout.split() if a), None)
    return {"partition": partition, "account": account, "accounting": accounting}


def snakemake_args(cluster: dict, profile_dir: Path, configfile: Path) -> list[str]:
    """Snakemake's arguments for a run through ``cluster`` with a copy (in ``profile_dir``)
    of the repository's SLURM profile in which only the partition and account placeholders
    are filled in."""
    text = PROFILE.read_text()
    for key, placeholder in PLACEHOLDERS.items():
        assert placeholder in text, f"{PROFILE} lost its {key} placeholder {placeholder!r}"
    text = text.replace(PLACEHOLDERS["slurm_partition"], cluster["partition"])
    # No account known (cluster without accounting): the plugin guesses or goes without.
    text = text.replace(PLACEHOLDERS["slurm_account"], cluster["account"] or "")
    (profile_dir / "profile.yaml").write_text(text)
    args = [
        "--profile",
        str(profile_dir),
        "--configfile",
        str(configfile),
        # A small cluster with jobs of seconds: look soon (a real one: the profile's 40 s).
        "--slurm-init-seconds-before-status-checks",
        "5",
        # Keep SLURM's per-job logs, to inspect a failed CI run.
        "--slurm-keep-successful-logs",
    ]
    if not cluster["accounting"]:
        # Without slurmdbd, sacct cannot see jobs end (tests/slurm/up.sh, accounting=0).
        args += ["--slurm-status-command", "squeue"]
    return args


def cancel(run_log: str) -> None:
    """Cancel the SLURM jobs of a Snakemake run (found by its run ID in its log) that was
    stopped before they ended: they would stay queued."""
    run_id = re.search(r"^SLURM run ID: (\S+)", run_log, re.M)
    if run_id:
        run("scancel", "--name", run_id.group(1))
