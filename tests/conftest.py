"""Shared fixtures: paths to the repository and to ../shared/data, and the demo study.

Tests that need data from outside the repository get it through :func:`require_data` (or a
fixture built on it), the one place that decides what a missing data set does: the test is
skipped and listed under a "DATA-DEPENDENT TESTS SKIPPED" banner at the end of the run, or,
with HOMING_REQUIRE_DATA=1 (set in CI), it fails. The atlas is not needed in ../shared: when
absent there it is downloaded once from its pinned source (config/config.yaml, sha256-checked)
into .cache/atlas/ under the repository and reused.
"""

import os
import subprocess
import sys
from pathlib import Path
from typing import NoReturn

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
    homing.atlas.fetch_source). A failed download is :func:`missing_data`."""
    from homing import HomingError
    from homing.atlas import fetch_source, sha256_of

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
STUDIES = ("demo_study", "quirks_study", "separate_frame_scan", "matrix_study")


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
    from homing import simulate

    out = tmp_path_factory.mktemp("demo") / "demo"
    simulate.simulate("demo", out, digimouse_json)
    simulate.write_config(out, digimouse_json)
    return out


#: The small study (``small_study``): the first two sessions of one ex vivo labelled and one
#: reporter-gene animal of the demo, i.e. each animal's atlas and CT-to-CT registrations.
SMALL_STUDY = {"EX01": ("d0", "d3"), "RE01": ("d1", "d4")}


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


@pytest.fixture(scope="session")
def small_study(demo_study, tmp_path_factory) -> Path:
    """2 animals x 2 sessions of the demo study (SMALL_STUDY), reading the demo's DICOM: a
    second run of the workflow (e.g. through SLURM) at a quarter of the demo's cost. Returns
    the folder holding its config.yaml and sheets."""
    return write_subset(demo_study, tmp_path_factory.mktemp("small"), SMALL_STUDY).parent


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
