"""The rule for tests whose data lives outside the repository (tests/conftest.py): a missing
data set is a skip listed under a banner, or a failure with HOMING_REQUIRE_DATA=1; the atlas
is fetched from its pinned source, sha256-checked, into a cache that later runs reuse.
No network: downloads here are file:// URLs."""

import hashlib
import os
import subprocess
import sys

import pytest

from homing import cli

from ..conftest import ATLAS_CACHE, REPO, atlas_source, fetch_atlas

TINY = """
from tests.conftest import SHARED_DATA, require_data


def test_needs_suv_reference():
    require_data(SHARED_DATA / "suv-reference", "SUV reference suite")


def test_needs_tcia(tcia_dicom):
    pass


def test_needs_nothing():
    pass
"""


def run_tiny(tmp_path, shared, require: str | None):
    """pytest on TINY with tests/conftest.py as a plugin and ``shared`` as the data root."""
    (tmp_path / "test_tiny.py").write_text(TINY)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    env = {k: v for k, v in os.environ.items() if k != "HOMING_REQUIRE_DATA"}
    env["HOMING_SHARED_DATA"] = str(shared)
    if require is not None:
        env["HOMING_REQUIRE_DATA"] = require
    cmd = [sys.executable, "-m", "pytest", "-p", "tests.conftest", "-p", "no:cacheprovider"]
    cmd += ["-c", str(tmp_path / "pytest.ini"), "--rootdir", str(tmp_path)]
    res = subprocess.run(
        cmd + [str(tmp_path / "test_tiny.py")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return res.returncode, res.stdout + res.stderr


def test_missing_data_skips_under_a_banner(tmp_path):
    code, out = run_tiny(tmp_path, tmp_path / "absent", None)
    assert code == 0, out
    assert "DATA-DEPENDENT TESTS SKIPPED: 2" in out, out
    banner = out[out.index("DATA-DEPENDENT TESTS SKIPPED") :]
    assert "test_tiny.py::test_needs_suv_reference: SUV reference suite absent" in banner
    assert "test_tiny.py::test_needs_tcia: TCIA PET/CT DICOM absent" in banner
    assert "test_needs_nothing" not in banner
    assert "1 passed, 2 skipped" in out


def test_missing_data_fails_with_require_data(tmp_path):
    code, out = run_tiny(tmp_path, tmp_path / "absent", "1")
    assert code == 1, out
    assert "HOMING_REQUIRE_DATA=1: missing data is a failure" in out
    assert "1 failed, 1 passed, 1 error" in out, out
    assert "DATA-DEPENDENT TESTS SKIPPED" not in out


def test_present_data_runs_without_a_banner(tmp_path):
    shared = tmp_path / "shared"
    (shared / "suv-reference").mkdir(parents=True)
    (shared / "dicom" / "tcia-sts-001").mkdir(parents=True)
    code, out = run_tiny(tmp_path, shared, "1")
    assert code == 0, out
    assert "3 passed" in out and "DATA-DEPENDENT" not in out


@pytest.fixture
def source(tmp_path):
    """A stand-in atlas file behind a file:// URL, and its sha256."""
    src = tmp_path / "upstream" / "digimouse.json"
    src.parent.mkdir()
    src.write_bytes(b'{"Shapes": "stand-in"}')
    return src, hashlib.sha256(src.read_bytes()).hexdigest()


def test_atlas_is_fetched_with_its_checksum_and_cached(tmp_path, source):
    src, sha = source
    absent, cache = tmp_path / "shared" / "digimouse.json", tmp_path / "cache" / "d.json"
    assert fetch_atlas(absent, cache, src.as_uri(), sha) == cache
    assert cache.read_bytes() == src.read_bytes()
    src.unlink()  # a later run reuses the cache without the source
    assert fetch_atlas(absent, cache, src.as_uri(), sha) == cache
    # A cache that does not match the pin is fetched again.
    src.write_bytes(b'{"Shapes": "stand-in"}')
    cache.write_bytes(b"truncated")
    assert fetch_atlas(absent, cache, src.as_uri(), sha) == cache
    assert cache.read_bytes() == src.read_bytes()
    # A copy in the shared data folder is used as it is.
    shared = tmp_path / "shared.json"
    shared.write_text("shared")
    assert fetch_atlas(shared, tmp_path / "other" / "d.json", "file:///nowhere", sha) == shared


def test_atlas_with_a_wrong_checksum_is_not_used(tmp_path, source, monkeypatch):
    src, sha = source
    cache = tmp_path / "cache" / "d.json"
    wrong = "0" * 64
    monkeypatch.delenv("HOMING_REQUIRE_DATA", raising=False)
    with pytest.raises(pytest.skip.Exception, match="DATA MISSING: .*does not match"):
        fetch_atlas(tmp_path / "absent.json", cache, src.as_uri(), wrong)
    assert not cache.exists()
    with pytest.raises(pytest.skip.Exception, match="could not download"):
        fetch_atlas(tmp_path / "absent.json", cache, (tmp_path / "gone").as_uri(), sha)
    monkeypatch.setenv("HOMING_REQUIRE_DATA", "1")
    with pytest.raises(pytest.fail.Exception, match="does not match"):
        fetch_atlas(tmp_path / "absent.json", cache, src.as_uri(), wrong)
    assert not cache.exists()


def test_tests_fetch_the_pinned_atlas_into_an_ignored_cache():
    assert atlas_source() == cli.atlas_pins(REPO / "config" / "config.yaml")
    assert ATLAS_CACHE.relative_to(REPO).parts[0] == ".cache"
    assert ".cache/" in (REPO / ".gitignore").read_text().splitlines()
