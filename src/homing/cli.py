"""Command line: ``homing simulate DESIGN OUTDIR``, ``homing demo-study OUTDIR``,
``homing build-atlas OUTDIR`` and ``homing roi-threshold IMAGE ... --out MASK``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from homing import HomingError
from homing.quant import roi
from homing.registration import atlas

#: The study config that pins the atlas's public source (url and sha256): the one copy of
#: those pins, read by the workflow and by these commands alike.
DEFAULT_CONFIG = Path("config") / "config.yaml"


def atlas_pins(config_path: Path = DEFAULT_CONFIG) -> tuple[str, str]:
    """(url, sha256) of the atlas's pinned source, from the study config's ``atlas`` keys."""
    config_path = Path(config_path)
    if not config_path.is_file():
        raise HomingError(
            f"{config_path}: no study config here, and it pins the atlas's source (atlas.url, "
            "atlas.sha256); run homing from the repository root or pass --config"
        )
    pins = (yaml.safe_load(config_path.read_text()) or {}).get("atlas") or {}
    if not pins.get("url") or not pins.get("sha256"):
        raise HomingError(f"{config_path}: key atlas needs url and sha256 (the pinned source)")
    return str(pins["url"]), str(pins["sha256"])


def _atlas_source(local: str | None, cache_dir: Path, config_path: Path) -> Path:
    url, sha256 = atlas_pins(config_path)
    return atlas.fetch_source(url, sha256, cache_dir / "digimouse.json", local)


def _simulate(design_arg: str, outdir: Path, atlas_arg, seed, force: bool, jobs, config) -> None:
    from homing.sim import simulate  # the simulator only for the commands that simulate

    design = simulate.load_design(simulate.design_path(design_arg))
    if seed is not None:
        design["seed"] = seed
    done = outdir / "design.yaml"
    # Complete and made from this very design (and seed): nothing to do.
    if done.exists() and not force and yaml.safe_load(done.read_text()) == design:
        print(f"study already complete in {outdir} (use --force to rebuild)")
    else:
        src = _atlas_source(atlas_arg, outdir.resolve().parent / ".homing-cache", config)
        simulate.simulate(design, outdir, src, jobs=jobs)
    cfg = simulate.write_config(outdir, atlas_arg)
    print(f"study: {outdir.resolve()}\nconfig overlay: {cfg}")


def _parser() -> argparse.ArgumentParser:
    """The ``homing`` command line and its subcommands."""
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
    for p in (p_sim, p_demo, p_atlas):
        p.add_argument(
            "--config",
            type=Path,
            default=DEFAULT_CONFIG,
            help="study config whose atlas.url and atlas.sha256 pin the atlas "
            f"(default: {DEFAULT_CONFIG})",
        )
    _add_roi_threshold(sub)
    return parser


def _add_roi_threshold(sub) -> None:
    """The ``roi-threshold`` subcommand: an isocontour ROI mask within a sphere (mm)."""
    p_roi = sub.add_parser(
        "roi-threshold",
        help="make an ROI mask by thresholding an image within a sphere (isocontour)",
        description=(
            "Threshold IMAGE within a sphere and keep the connected region holding the "
            "sphere's maximum: voxels >= F x (maximum in the sphere), the '40 percent of "
            "max' convention for F = 0.4, or >= V in the image's units (e.g. Bq/mL). IMAGE "
            "should be in the scan's CT space, e.g. the PET on the CT grid, which the "
            "workflow makes when asked for it by name (snakemake ... "
            "results/sub-A/ses-S/pet/sub-A_ses-S_space-ct_pet.nii.gz): the mask is then "
            "on the CT grid and can go straight into the scans sheet, column roi_masks "
            "(e.g. tumour=MASK.nii.gz). Writes MASK.nii.gz (uint8, IMAGE's grid) and MASK.json "
            "(method, image, centre, radius, threshold, voxels, volume_ml)."
        ),
    )
    p_roi.add_argument(
        "image", type=Path, metavar="IMAGE", help="3D NIfTI, ideally in CT space (see above)"
    )
    p_roi.add_argument(
        "--centre-mm",
        nargs=3,
        type=float,
        required=True,
        metavar=("X", "Y", "Z"),
        help="sphere centre in world mm (RAS, as a NIfTI viewer shows IMAGE's coordinates)",
    )
    p_roi.add_argument(
        "--radius-mm", type=float, required=True, metavar="R", help="sphere radius (mm)"
    )
    how = p_roi.add_mutually_exclusive_group(required=True)
    how.add_argument(
        "--fraction", type=float, metavar="F", help="fraction of the sphere's maximum, (0, 1]"
    )
    how.add_argument(
        "--min-value", type=float, metavar="V", help="absolute threshold in IMAGE's units"
    )
    p_roi.add_argument(
        "--out", type=Path, required=True, metavar="MASK", help="mask to write (.nii.gz)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        if args.command in ("simulate", "demo-study"):
            design = args.design if args.command == "simulate" else "demo"
            _simulate(
                design, args.outdir, args.atlas, args.seed, args.force, args.jobs, args.config
            )
        elif args.command == "build-atlas":
            src = _atlas_source(args.atlas, args.outdir / ".cache", args.config)
            atlas.build_atlas(src, args.outdir)
            print(f"atlas written to {args.outdir}")
        elif args.command == "roi-threshold":
            meta = roi.write_threshold_roi(
                args.image, args.out, args.centre_mm, args.radius_mm, args.fraction, args.min_value
            )
            print(
                f"{args.out}: {meta['voxels']} voxels, {meta['volume_ml']:.4g} mL "
                f"(threshold {meta['threshold']:.4g}; sidecar {roi.sidecar_path(args.out)})"
            )
    except HomingError as exc:
        print(f"homing: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
