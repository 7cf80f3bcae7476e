"""Command line: ``homing demo-study OUTDIR`` and ``homing build-atlas OUTDIR``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from homing import HomingError, atlas, demo

#: The pinned public source of the atlas (also the default in config/config.yaml; a test
#: keeps the two equal).
ATLAS_URL = (
    "https://raw.githubusercontent.com/fangq/mcx/d97fd717db78cd7e964606cf127b7e1ce2c55ed8/"
    "example/digimouse/digimouse.json"
)
ATLAS_SHA256 = "beec0ba45efc1de1365ed2012a26f3101c3ba62e4959cec7b40bc00bdeb3bb70"


def _atlas_source(local: str | None, cache_dir: Path) -> Path:
    return atlas.fetch_source(ATLAS_URL, ATLAS_SHA256, cache_dir / "digimouse.json", local)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="homing", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_demo = sub.add_parser(
        "demo-study",
        help="write the built-in demo study (DICOM, sheets, config overlay, truth tables)",
    )
    p_demo.add_argument("outdir", type=Path)
    p_demo.add_argument(
        "--atlas",
        default=None,
        help="local copy of digimouse.json (default: download, sha256-checked)",
    )
    p_demo.add_argument("--seed", type=int, default=20260302)
    p_demo.add_argument("--force", action="store_true", help="rebuild even if complete")
    p_atlas = sub.add_parser("build-atlas", help="build the atlas template and labels")
    p_atlas.add_argument("outdir", type=Path)
    p_atlas.add_argument("--atlas", default=None, help="local copy of digimouse.json")
    args = parser.parse_args(argv)
    try:
        if args.command == "demo-study":
            done = args.outdir / "truth" / "organs.tsv"
            if done.exists() and not args.force:
                print(f"demo study already complete in {args.outdir} (use --force to rebuild)")
            else:
                src = _atlas_source(args.atlas, args.outdir.parent / ".homing-cache")
                demo.generate(args.outdir, src, seed=args.seed)
            cfg = demo.write_config(args.outdir, args.atlas)
            print(f"demo study: {args.outdir.resolve()}\nconfig overlay: {cfg}")
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
