"""Packaging checks: pins in sync, the shipped config valid and documented, the README quick
start and CI entry point."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from homing import cli
from homing.workflow.study import load_schema, validate_config

REPO = Path(__file__).resolve().parents[1]
CONFIG_PATH = REPO / "config" / "config.yaml"
IGNORED = {"python", "pip"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name.strip().lower())


def _split_pin(spec: str, sep: str) -> tuple[str, str]:
    name, found, version = spec.partition(sep)
    assert found and version.strip(), f"{spec!r} is not pinned with {sep!r}"
    assert not re.search(r"[<>=!~,]", version), f"{spec!r} has more than one pin"
    return _norm(name), version.strip()


def pyproject_pins() -> dict[str, str]:
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    specs = list(data["project"]["dependencies"]) + list(
        data["project"]["optional-dependencies"]["dev"]
    )
    pins = dict(_split_pin(spec, "==") for spec in specs)
    assert len(pins) == len(specs), "a package is listed twice in pyproject.toml"
    return pins


def environment_pins() -> dict[str, str]:
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pins: dict[str, str] = {}
    count = 0
    for entry in env["dependencies"]:
        if isinstance(entry, dict):
            assert set(entry) == {"pip"}, f"unexpected entry {entry!r} in environment.yml"
            items = [_split_pin(spec, "==") for spec in entry["pip"]]
        elif _norm(re.split(r"[=<>!~ ]", entry)[0]) in IGNORED:
            continue
        else:
            assert "==" not in entry, f"conda pins use a single '=': {entry!r}"
            items = [_split_pin(entry, "=")]
        for name, version in items:
            pins[name] = version
            count += 1
    assert len(pins) == count, "a package is listed twice in environment.yml"
    return pins


def test_pyproject_pins_have_versions():
    pins = pyproject_pins()
    assert {"snakemake", "numpy", "antspyx", "pytest", "ruff"} <= set(pins)


def test_environment_matches_pyproject():
    py, env = pyproject_pins(), environment_pins()
    only_py = {k: v for k, v in py.items() if k not in env}
    only_env = {k: v for k, v in env.items() if k not in py}
    differ = {k: (py[k], env[k]) for k in py.keys() & env.keys() if py[k] != env[k]}
    assert not only_py, f"in pyproject.toml but not environment.yml: {only_py}"
    assert not only_env, f"in environment.yml but not pyproject.toml: {only_env}"
    assert not differ, f"pyproject.toml vs environment.yml versions differ: {differ}"


def test_environment_python_matches_requires_python():
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pythons = [e for e in env["dependencies"] if isinstance(e, str) and e.startswith("python")]
    assert pythons == ["python=3.11"]
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert requires == ">=3.11,<3.12"


# --- config/config.yaml --------------------------------------------------------------------


def test_config_validates_against_schema():
    config = yaml.safe_load(CONFIG_PATH.read_text())
    schema = load_schema(REPO / "workflow" / "schemas" / "config.schema.yaml")
    assert validate_config(config, schema, source=str(CONFIG_PATH)) is config


def test_config_atlas_matches_cli_pins():
    config = yaml.safe_load(CONFIG_PATH.read_text())
    assert (config["atlas"]["url"], config["atlas"]["sha256"]) == cli.atlas_pins(CONFIG_PATH)


KEY_LINE = re.compile(r"^(\s*)([A-Za-z_][A-Za-z0-9_]*):")


def undocumented_keys(text: str) -> list[tuple[int, str]]:
    """(line number, key) of every mapping key without a comment above it.

    Rule: the nearest previous non-blank line of a key must be a comment line. The only
    exception is the first key inside a block, directly under its parent key, when that
    parent is itself documented (its own comment then covers the block). List items
    ("- ...") are not keys; a key written inside a list item is judged like any other.
    """
    lines = text.splitlines()
    documented: dict[int, bool] = {}
    problems = []
    for i, line in enumerate(lines):
        m = KEY_LINE.match(line)
        if not m:
            continue
        indent = len(m.group(1))
        j = i - 1
        while j >= 0 and not lines[j].strip():
            j -= 1
        prev = lines[j] if j >= 0 else ""
        ok = prev.lstrip().startswith("#")
        if not ok and j >= 0:
            parent = KEY_LINE.match(prev)
            ok = bool(
                parent
                and len(parent.group(1)) < indent
                and prev.rstrip().endswith(":")
                and documented.get(j, False)
            )
        documented[i] = ok
        if not ok:
            problems.append((i + 1, m.group(2)))
    return problems


def _all_keys(node) -> set[str]:
    keys: set[str] = set()
    if isinstance(node, dict):
        for k, v in node.items():
            keys.add(str(k))
            keys |= _all_keys(v)
    elif isinstance(node, list):
        for v in node:
            keys |= _all_keys(v)
    return keys


def test_comment_checker_catches_uncommented_keys():
    text = (
        "# the a key\n"
        "a: 1\n"
        "\n"
        "b: 2\n"  # top level, no comment: caught
        "# a block\n"
        "c:\n"
        "  d: 1\n"  # first key under a documented parent: fine
        "  e: 2\n"  # second key, no comment: caught
        "  # f\n"
        "  f: [x, y]\n"
        "g:\n"  # undocumented parent: caught
        "  h: 1\n"  # first key under an undocumented parent: caught
    )
    assert undocumented_keys(text) == [(4, "b"), (8, "e"), (11, "g"), (12, "h")]


def test_every_config_key_is_documented():
    text = CONFIG_PATH.read_text()
    found = {m.group(2) for line in text.splitlines() if (m := KEY_LINE.match(line))}
    # the line-based checker must see every key yaml sees, at every level
    assert found == _all_keys(yaml.safe_load(text))
    missing = undocumented_keys(text)
    assert missing == [], f"{CONFIG_PATH}: (line, key) without a '#' comment above: {missing}"


# --- README quick start and CI -------------------------------------------------------------


def quick_start_commands(readme: str) -> list[str]:
    lines = readme.splitlines()
    heads = [
        i for i, line in enumerate(lines) if line.startswith("#") and "quick start" in line.lower()
    ]
    assert heads, "README.md has no heading containing 'Quick start'"
    start = next(
        (i for i in range(heads[0] + 1, len(lines)) if lines[i].lstrip().startswith("```")), None
    )
    assert start is not None, "no fenced code block after the Quick start heading"
    nxt = [i for i in range(heads[0] + 1, start) if re.match(r"^#{1,6}\s", lines[i])]
    assert not nxt, "the first code block after 'Quick start' is under another heading"
    end = next(i for i in range(start + 1, len(lines)) if lines[i].lstrip().startswith("```"))
    block = [line.strip() for line in lines[start + 1 : end]]
    return [line for line in block if line and not line.startswith("#")]


def test_quick_start_parser():
    readme = "# Homing\n\n## Quick start\n\n```bash\n# demo\n./demo.sh\n\n./test.sh\n```\n"
    assert quick_start_commands(readme) == ["./demo.sh", "./test.sh"]
    with pytest.raises(AssertionError):
        quick_start_commands("# Homing\n\n```\n./demo.sh\n```\n")


def test_readme_quick_start_names_two_commands():
    readme = REPO / "README.md"
    assert readme.is_file(), "README.md is missing"
    assert quick_start_commands(readme.read_text()) == ["./demo.sh", "./test.sh"]


def test_quick_start_scripts_exist_and_are_executable():
    for name in ("demo.sh", "test.sh", ".ci/run"):
        path = REPO / name
        assert path.is_file(), name
        assert path.stat().st_mode & 0o111, f"{name} is not executable"
        assert path.read_text().startswith("#!"), f"{name} has no shebang"


def test_ci_runs_test_sh():
    lines = (REPO / ".ci" / "run").read_text().splitlines()
    calls = [
        line.strip()
        for line in lines
        if re.match(r"^\s*(exec\s+)?\./test\.sh(\s|$)", line) and not line.lstrip().startswith("#")
    ]
    assert calls, ".ci/run does not call ./test.sh"


def test_the_workflow_never_imports_the_simulator():
    """homing.sim (simulator, phantom, kinetics, DICOM writer) is for tests, benchmarks and
    ``homing simulate``: no module the workflow runs may pull it in."""
    src = REPO / "src"
    product = [
        ".".join(p.relative_to(src).with_suffix("").parts)
        for p in (src / "homing").rglob("*.py")
        if p.stem != "__init__" and "sim" not in p.relative_to(src).parts
    ]
    code = (
        "import importlib, sys\n"
        f"for name in {product!r}: importlib.import_module(name)\n"
        "print(sorted(m for m in sys.modules if m.startswith('homing.sim')))"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]", res.stdout
    assert len(product) >= 10, product
