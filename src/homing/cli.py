"""Command line: ``homing simulate DESIGN OUTDIR``, ``homing demo-study OUTDIR`` and
``homing build-atlas OUTDIR``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from homing import HomingError, atlas, simulate

#: The pinned public source of the atlas (also the default in config/config.yaml; a test
#: keeps the two equal).
ATLAS_URL = (
    "https://raw.githubusercontent.com/fangq/mcx/d97fd717db78cd7e964606cf127b7e1ce2c55ed8/"
    "example/digimouse/digimouse.json"
)
ATLAS_SHA256 = "beec0ba45efc1de1365ed2012a26f3101c3ba62e4959cec7b40bc00bdeb3bb70"


def _atlas_source(local: str | None, cache_dir: Path) -> Path:
    return atlas.fetch_source(ATLAS_URL, ATLAS_SHA256, cache_dir / "digimouse.json", local)


def _simulate(design_arg: str, outdir: Path, atlas_arg, seed, force: bool, jobs) -> None:
    design = simulate.load_design(simulate.design_path(design_arg))
    if seed is not None:
        design["seed"] = seed
    done = outdir / "design.yaml"
    # Complete and made from this very design (and seed): nothing to do.
    if done.exists() and not force and yaml.safe_load(done.read_text()) == design:
        print(f"study already complete in {outdir} (use --force to rebuild)")
    else:
        src = _atlas_source(atlas_arg, outdir.resolve().parent / ".homing-cache")
        simulate.simulate(design, outdir, src, jobs=jobs)
    cfg = simulate.write_config(outdir, atlas_arg)
    print(f"study: {outdir.resolve()}\nconfig overlay: {cfg}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="homing", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_sim = sub.add_parser(
        "simulate",
        help="simulate a study from a design file: DICOM, sheets, config overlay, truth tables",
    )
    p_sim.add_argument("design", help="design YAML, or a shipped design: demo, hard, quirks")
    p_sim.add_argument("outdir", type=Path)
    p_demo = sub.add_parser("demo-study", help="the built-in demo study (= simulate demo)")
    p_demo.add_argument("outdir", type=Path)
    for p in (p_sim, p_demo):
        p.add_argument(
            "--atlas",
            default=None,
            help="local copy of digimouse.json (default: download, sha256-checked)",
        )
        p.add_argument("--seed", type=int, default=None, help="override the design's seed")
        p.add_argument("--force", action="store_true", help="rebuild even if complete")
        p.add_argument("--jobs", type=int, default=None, help="animals in parallel (default: CPUs)")
    p_atlas = sub.add_parser("build-atlas", help="build the atlas template and labels")
    p_atlas.add_argument("outdir", type=Path)
    p_atlas.add_argument("--atlas", default=None, help="local copy of digimouse.json")
    args = parser.parse_args(argv)
    try:
        if args.command in ("simulate", "demo-study"):
            design = args.design if args.command == "simulate" else "demo"
            _simulate(design, args.outdir, args.atlas, args.seed, args.force, args.jobs)
        elif args.command == "build-atlas":
            src = _atlas_source(args.atlas, args.outdir / ".cache")
            atlas.build_atlas(src, args.outdir)
            print(f"atlas written to {args.outdir}")
    except HomingError as exc:
        print(f"homing: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
