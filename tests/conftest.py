"""Shared fixtures: paths to the repository and to ../shared/data, and the demo study.

Tests that need data from outside the repository get it through :func:`require_data` (or a
fixture built on it), the one place that decides what a missing data set does: the test is
skipped and listed under a "DATA-DEPENDENT TESTS SKIPPED" banner at the end of the run, or,
with HOMING_REQUIRE_DATA=1 (set in CI), it fails. The atlas is not needed in ../shared: when
absent there it is downloaded once from its pinned source (config/config.yaml, sha256-checked)
into .cache/atlas/ under the repository and reused.
"""

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
#: The test data beside the checkout; HOMING_SHARED_DATA points the tests elsewhere.
SHARED_DATA = Path(os.environ.get("HOMING_SHARED_DATA") or REPO.parent / "shared" / "data")
DIGIMOUSE_JSON = SHARED_DATA / "atlas" / "digimouse" / "digimouse.json"
TCIA_DICOM = SHARED_DATA / "dicom" / "tcia-sts-001"
#: Where the tests keep the atlas they download when ../shared has none (gitignored).
ATLAS_CACHE = REPO / ".cache" / "atlas" / "digimouse.json"
#: Start of the skip reason of a test whose data is missing (picked up by the banner).
DATA_SKIP = "DATA MISSING: "


def missing_data(reason: str) -> NoReturn:
    """Skip the current test for missing data, or fail it when HOMING_REQUIRE_DATA=1."""
    if os.environ.get("HOMING_REQUIRE_DATA", "") not in ("", "0"):
        pytest.fail(f"{reason} (HOMING_REQUIRE_DATA=1: missing data is a failure)", pytrace=False)
    pytest.skip(DATA_SKIP + reason)


def require_data(path: Path, what: str) -> Path:
    """``path`` if it exists, else :func:`missing_data` naming ``what``."""
    path = Path(path)
    if not path.exists():
        missing_data(f"{what} absent ({path})")
    return path


def atlas_source(config: Path = REPO / "config" / "config.yaml") -> tuple[str, str]:
    """The atlas's pinned public source: (url, sha256) from the default config."""
    atlas = yaml.safe_load(Path(config).read_text())["atlas"]
    return atlas["url"], atlas["sha256"]


def fetch_atlas(shared_copy: Path, cache: Path, url: str, sha256: str) -> Path:
    """digimouse.json: the copy in ../shared if there, else ``cache`` if it holds the pinned
    file, else downloaded now from ``url`` into ``cache`` (sha256-checked by
    homing.registration.atlas.fetch_source). A failed download is :func:`missing_data`."""
    from homing import HomingError
    from homing.registration.atlas import fetch_source, sha256_of

    if Path(shared_copy).is_file():
        return Path(shared_copy)
    cache = Path(cache)
    if cache.is_file() and sha256_of(cache) == sha256:
        return cache
    try:
        return fetch_source(url, sha256, cache)
    except HomingError as exc:
        missing_data(f"Digimouse atlas absent ({shared_copy}) and not fetched: {exc}")


#: Tests that check the code and the workflow's text without running anything heavy: they run
#: first, and a failure among them stops the suite, so a typo fails in seconds.
#: In this order: the two without a study first (seconds), then those that need the demo's
#: sheets (after the demo study is generated, about a minute).
FIRST_TESTS = (
    "test_snakefmt_and_ruff_are_clean",
    "test_every_rule_declares_log_benchmark_threads_memory_and_runtime",
    "test_snakemake_lint_is_clean",
    "test_dry_run_lists_the_whole_chain",
)
#: Session fixtures that run the whole workflow (minutes each): their tests go last.
WORKFLOW_RUNS = ("full_run", "slurm_run", "resume_run")
#: Session fixtures that simulate a study or register scans (tens of seconds).
STUDIES = ("demo_study", "quirks_study", "separate_frame_scan", "matrix_study", "hotel_studies")


def _tier(item) -> tuple[int, int]:
    """(0, i): the i-th of FIRST_TESTS; (1, 0): unit tests; (2, 0): tests on a simulated
    study; (3, 0): full runs."""
    if item.originalname in FIRST_TESTS:
        return 0, FIRST_TESTS.index(item.originalname)
    names = set(item.fixturenames)
    if names & set(WORKFLOW_RUNS) or item.get_closest_marker("workflow") and "demo_study" in names:
        return 3, 0
    if names & set(STUDIES):
        return 2, 0
    return 1, 0


def pytest_collection_modifyitems(session, config, items):
    """Cheap tests first (stable sort: within a tier, files keep their order)."""
    items.sort(key=_tier)


def pytest_collection_finish(session):
    """Note which workflow runs the selected tests need (after -k/-m deselection): only
    those are started in the background (``start_needed_runs``)."""
    NEEDED_RUNS.update(n for item in session.items for n in item.fixturenames if n in WORKFLOW_RUNS)
    if any("bids_validator" in item.fixturenames for item in session.items):
        # Its npm install waits on the network, not the CPU: it runs while other tests do.
        from .workflow.test_bids import start_validator_install

        start_validator_install()


def pytest_sessionfinish(session, exitstatus):
    """Stop any background run still going (a run stopped early, e.g. by -x)."""
    for run in BACKGROUND.values():
        run.stop()
    bids = sys.modules.get(f"{__package__}.workflow.test_bids")
    for proc in getattr(bids, "_BACKGROUND_INSTALL", []):
        proc.kill()


def pytest_runtest_logreport(report):
    """A failed lint, format or dry-run test ends the run at once (see FIRST_TESTS)."""
    if report.failed and report.nodeid.split("::")[-1].split("[")[0] in FIRST_TESTS:
        pytest.exit(f"{report.nodeid} failed: fix that first (the rest was not run)", 1)


@pytest.fixture(scope="session")
def digimouse_json() -> Path:
    return fetch_atlas(DIGIMOUSE_JSON, ATLAS_CACHE, *atlas_source())


@pytest.fixture(scope="session")
def tcia_dicom() -> Path:
    """The real TCIA PET/CT DICOM of ../shared/data (not downloadable: no public pin)."""
    return require_data(TCIA_DICOM, "TCIA PET/CT DICOM")


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    return longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)


def pytest_terminal_summary(terminalreporter):
    """A loud banner listing every test skipped for missing data."""
    skipped = [
        (r.nodeid, _skip_reason(r).split(DATA_SKIP, 1)[1])
        for r in terminalreporter.stats.get("skipped", [])
        if DATA_SKIP in _skip_reason(r)
    ]
    if not skipped:
        return
    tr = terminalreporter
    tr.section(f"DATA-DEPENDENT TESTS SKIPPED: {len(skipped)}", sep="!", red=True, bold=True)
    tr.line(
        "These tests did not run because their data is missing; the suite has NOT checked "
        "what they check. Provide ../shared/data (or HOMING_SHARED_DATA) and network for the "
        "atlas; HOMING_REQUIRE_DATA=1 turns these skips into failures.",
        red=True,
    )
    for nodeid, reason in skipped:
        tr.line(f"  {nodeid}: {reason}")


@pytest.fixture(scope="session")
def demo_study(tmp_path_factory, digimouse_json) -> Path:
    """The full demo study, generated once per test session (under a minute)."""
    from homing.sim import simulate

    out = tmp_path_factory.mktemp("demo") / "demo"
    simulate.simulate("demo", out, digimouse_json)
    simulate.write_config(out, digimouse_json)
    start_needed_runs(out, tmp_path_factory)
    return out


#: The small study (``small_study``): the first two sessions of one ex vivo labelled animal
#: of the demo (its atlas and CT-to-CT registrations), one reporter-gene scan, and the
#: control at that session, whose normal uptake the reporter's live cells need (without it
#: they would differ from the full demo's, by design).
SMALL_STUDY = {"EX01": ("d0", "d3"), "RE01": ("d1",), "CO01": ("d1",)}


def write_subset(demo_study: Path, out: Path, selection: dict[str, tuple[str, ...]]) -> Path:
    """Sheets and config overlay in ``out`` for some of the demo's animals and sessions
    (``selection``: animal -> sessions), reading the demo's DICOM. Returns the config."""
    import pandas as pd

    out.mkdir(parents=True, exist_ok=True)
    animals = pd.read_csv(demo_study / "animals.tsv", sep="\t", dtype=str, keep_default_na=False)
    scans = pd.read_csv(demo_study / "scans.tsv", sep="\t", dtype=str, keep_default_na=False)
    animals = animals[animals.animal_id.isin(selection)]
    pairs = zip(scans.animal_id, scans.session_id, strict=True)
    scans = scans[[s in selection.get(a, ()) for a, s in pairs]].copy()
    for col in ("emission_dicom", "ct_dicom"):
        scans[col] = [str(demo_study / p) for p in scans[col]]
    assert len(scans) == sum(map(len, selection.values())) and len(animals) == len(selection)
    animals.to_csv(out / "animals.tsv", sep="\t", index=False)
    scans.to_csv(out / "scans.tsv", sep="\t", index=False)
    cfg = yaml.safe_load((demo_study / "config.yaml").read_text())
    cfg.update(animals=str(out / "animals.tsv"), scans=str(out / "scans.tsv"))
    (out / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=True))
    return out / "config.yaml"


_SMALL_STUDY_DIR: dict[str, Path] = {}


def _small_study(demo_study: Path, tmp_path_factory) -> Path:
    """The small study's folder, written once per session (see ``small_study``)."""
    if "dir" not in _SMALL_STUDY_DIR:
        out = tmp_path_factory.mktemp("small")
        _SMALL_STUDY_DIR["dir"] = write_subset(demo_study, out, SMALL_STUDY).parent
    return _SMALL_STUDY_DIR["dir"]


@pytest.fixture(scope="session")
def small_study(demo_study, tmp_path_factory) -> Path:
    """4 scans of 3 animals of the demo study (SMALL_STUDY), reading the demo's DICOM: a
    second run of the workflow (e.g. through SLURM) at about 30 % of the demo's cost. Returns
    the folder holding its config.yaml and sheets."""
    return _small_study(demo_study, tmp_path_factory)


@pytest.fixture(scope="module")
def hotel_studies(tmp_path_factory, digimouse_json):
    """(hotel study, alone study of the ex vivo pair) of builders.cheap_hotel_design, once per
    session: the simulator's tests and the shared-scan workflow test read the same one."""
    from homing.sim import simulate

    from .builders import cheap_hotel_design

    root = tmp_path_factory.mktemp("hotel")
    design = simulate.resolve_design(cheap_hotel_design())
    # Two groups, one process each: the second core is free while the demo run waits.
    simulate.simulate(design, root / "hotel", digimouse_json, jobs=2)
    # The twins of the pair at d0 only (an animal's sessions each have their own streams).
    design["hotel"]["alone"] = True
    design["cohorts"][0]["sessions"] = design["cohorts"][0]["sessions"][:1]
    simulate.simulate(design, root / "alone", digimouse_json, only_animals=set(HOTEL_PAIR), jobs=1)
    return root / "hotel", root / "alone"


#: The two ex vivo mice that share each session's scan in builders.cheap_hotel_design.
HOTEL_PAIR = ["HA01", "HA02"]


@pytest.fixture(scope="session")
def quirks_study(tmp_path_factory, digimouse_json) -> Path:
    """The simulator's `quirks` design (every scanner metadata variant), once per session."""
    from homing.sim import simulate

    out = tmp_path_factory.mktemp("quirks") / "quirks"
    simulate.simulate("quirks", out, digimouse_json)
    return out


def ingest_to(folder: Path, kind: str, out: Path) -> Path:
    """Ingest a DICOM series to ``out``.nii.gz (+ .json) as the workflow does; a PET without
    PatientWeight (QX01 d5 on purpose) gets a 25 g fallback, which only SUV uses."""
    from homing.dicom import ingest

    vol = ingest.ingest(folder, kind, {"fallback_body_weight_kg": 0.025} if kind != "ct" else None)
    ingest.write_volume(vol, out.with_suffix(".nii.gz"), out.with_suffix(".json"))
    return out.with_suffix(".nii.gz")


@pytest.fixture(scope="session")
def separate_frame_scan(quirks_study, tmp_path_factory):
    """QX01 d5 of the quirks study (PET and CT in separate frames, ~100 mm apart along the
    bed and rotated), ingested and registered once per session (a rigid MI registration,
    about a minute): (pet, ct, transform, record, true CT → PET matrix in RAS)."""
    import json

    import pandas as pd

    from homing.registration import pet_to_ct

    scans = pd.read_csv(quirks_study / "truth" / "scans.tsv", sep="\t", dtype=str)
    row = scans[(scans.animal_id == "QX01") & (scans.session_id == "d5")].iloc[0]
    truth = np.array(json.loads(row.pet_from_ct_mm))
    assert np.linalg.norm(truth[:3, 3]) > 50  # really a separate frame
    tmp = tmp_path_factory.mktemp("p2c")
    base = quirks_study / "dicom" / "sub-QX01" / "ses-d5"
    pet = ingest_to(base / "pet", "emission", tmp / "pet")
    ct = ingest_to(base / "ct", "ct", tmp / "ct")
    record = pet_to_ct.register_pet_to_ct(pet, ct, False, tmp / "x.mat", 42, 1)
    return pet, ct, tmp / "x.mat", record, truth


#: Environment of every Snakemake the tests start: BLAS single-threaded, for reproducibility.
SNAKEMAKE_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


def snakemake_command(workdir: Path) -> list[str]:
    """Snakemake on the repository's workflow, writing into ``workdir``."""
    return [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(REPO / "workflow" / "Snakefile"),
        "-d",
        str(workdir),
    ]


def local_snakemake_command(workdir: Path, configfile: Path | None = None) -> list[str]:
    """Snakemake on the repository's workflow with the local (default) profile."""
    cmd = snakemake_command(workdir) + [
        "--workflow-profile",
        str(REPO / "workflow" / "profiles" / "default"),
    ]
    return cmd + (["--configfile", str(configfile)] if configfile is not None else [])


def snakemake(workdir: Path, *args: str, configfile: Path | None = None):
    """Run Snakemake (local_snakemake_command) to its end, output captured."""
    return subprocess.run(
        local_snakemake_command(workdir, configfile) + list(args),
        capture_output=True,
        text=True,
        env=SNAKEMAKE_ENV,
        timeout=3000,
    )


# --- workflow runs in the background ---------------------------------------------------------
# pytest runs one test at a time, so while the cheap tests run one of the machine's two
# cores sits idle. The full demo run (minutes of computing) and the SLURM run of the small
# study (mostly waiting for the scheduler) are started as soon as the demo study exists,
# and their fixtures wait for them: the tests and the runs share the cores.

#: Workflow-run fixtures the selected tests need (pytest_collection_finish).
NEEDED_RUNS: set[str] = set()
#: Runs started in this session, by fixture name.
BACKGROUND: dict[str, "BackgroundRun"] = {}
#: Longest a background run may take from its start (s).
RUN_TIMEOUT_S = 3600


class BackgroundRun:
    """A command (a Snakemake run) in its own process group, its output into ``log``."""

    def __init__(self, cmd: list[str], workdir: Path, log: Path, on_stop: Callable | None = None):
        self.cmd, self.workdir, self.log, self.on_stop = cmd, workdir, log, on_stop
        self.deadline = time.monotonic() + RUN_TIMEOUT_S
        with open(log, "w") as out:
            self.proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, env=SNAKEMAKE_ENV, start_new_session=True
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait(self) -> subprocess.CompletedProcess:
        """The finished run (return code -9 if RUN_TIMEOUT_S passed and it was stopped)."""
        try:
            code = self.proc.wait(timeout=max(self.deadline - time.monotonic(), 1))
        except subprocess.TimeoutExpired:
            self.stop()
            code = -9
        return subprocess.CompletedProcess(self.cmd, code, stdout=self.output(), stderr="")

    def stop(self) -> None:
        """End the run and its jobs if still going (SIGTERM, then SIGKILL after 30 s)."""
        if self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        if self.on_stop:
            self.on_stop(self.output())


def background_run(name: str, start: Callable[[], BackgroundRun]) -> BackgroundRun:
    """The run of fixture ``name``: the one already started, else started now."""
    if name not in BACKGROUND:
        BACKGROUND[name] = start()
    return BACKGROUND[name]


def _start_full_run(demo_study: Path, tmp_path_factory) -> BackgroundRun:
    work = tmp_path_factory.mktemp("run")
    cmd = local_snakemake_command(work, demo_study / "config.yaml")
    cmd += ["--cores", str(min(os.cpu_count() or 1, 2))]
    return BackgroundRun(cmd, work, work / "snakemake.log")


def start_slurm_run(demo_study: Path, tmp_path_factory, cluster: dict) -> BackgroundRun:
    """The small study through SLURM (tests/workflow/test_slurm.py checks it)."""
    from . import slurm_cluster

    profile = tmp_path_factory.mktemp("profile")
    work = tmp_path_factory.mktemp("slurm-run")
    config = _small_study(demo_study, tmp_path_factory) / "config.yaml"
    cmd = snakemake_command(work) + slurm_cluster.snakemake_args(cluster, profile, config)
    return BackgroundRun(cmd, work, work / "snakemake.log", on_stop=slurm_cluster.cancel)


def start_needed_runs(demo_study: Path, tmp_path_factory) -> None:
    """Start the workflow runs the selected tests need, in the background."""
    if "full_run" in NEEDED_RUNS:
        background_run("full_run", lambda: _start_full_run(demo_study, tmp_path_factory))
    if "slurm_run" in NEEDED_RUNS:
        from . import slurm_cluster

        if slurm_cluster.problem() is None:
            cluster = slurm_cluster.info()
            background_run(
                "slurm_run", lambda: start_slurm_run(demo_study, tmp_path_factory, cluster)
            )


@pytest.fixture(scope="session")
def full_run(demo_study, tmp_path_factory):
    """The whole demo study run locally, once per test session (several minutes, started in
    the background when the demo study is made): checked against the demo's truth in
    test_workflow.py, and against the SLURM run in test_slurm.py."""
    run = background_run("full_run", lambda: _start_full_run(demo_study, tmp_path_factory))
    res = run.wait()
    if res.returncode != 0:
        work = run.workdir
        logs = "\n".join(
            f"--- {p}\n{p.read_text()[-3000:]}"
            for p in sorted((work / "logs").rglob("*.log"))
            if "ERROR" in p.read_text()
        )
        pytest.fail(f"workflow failed:\n{res.stdout[-5000:]}\n{logs}")
    return run.workdir
