"""Time and memory of splitting a large shared ("mouse hotel") CT between its animals.

    python bench/bench_split.py [--shape 512 512 680] [--voxel 0.2] [--mice 4] [--dtype float32]

Builds a synthetic hotel CT of that shape (a micro-CT's 512 × 512 × 680 at 0.2 mm by
default; float32, as homing.dicom.read gives a CT): ``--mice`` ellipsoid mice side by side
(soft tissue, a bone rod, air-filled lungs; 11 × 9 × 38 mm radii, ≈ 16 mL), each in a
1 mm polymer trough (+120 HU) hanging from a 1 mm deck the length of the field of view, a
1 mm line across their backs, and noisy air. Then prints, for ``find_bodies`` alone and for
the whole ``split_scan`` (bodies, assignment, cut boxes, QC figure): wall seconds and the
peak resident memory of this process (VmHWM; reset after the CT is built, so the figure is
the CT in memory plus what the split adds), and the bodies found.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from homing.registration import split

RADII = (11.0, 9.0, 38.0)


def build(shape, voxel: float, mice: int, dtype) -> tuple[np.ndarray, np.ndarray, list]:
    """The hotel CT (HU), its RAS affine (centred on the field of view) and the mice's
    centres (mm), built 32 slices at a time (no full-size float64 temporaries)."""
    affine = np.diag([voxel, voxel, voxel, 1.0])
    affine[:3, 3] = [-(n - 1) / 2 * voxel for n in shape]
    rx, ry, rz = RADII
    pitch = 2 * rx + 3.0
    centres = [((k - (mice - 1) / 2) * pitch, 0.0, 0.0) for k in range(mice)]
    rng = np.random.default_rng(1)
    hu = np.empty(shape, dtype)
    x = (affine[0, 3] + voxel * np.arange(shape[0], dtype=np.float32))[:, None, None]
    y = (affine[1, 3] + voxel * np.arange(shape[1], dtype=np.float32))[None, :, None]
    for k0 in range(0, shape[2], 32):
        k1 = min(k0 + 32, shape[2])
        z = (affine[2, 3] + voxel * np.arange(k0, k1, dtype=np.float32))[None, None, :]
        slab = np.full((shape[0], shape[1], k1 - k0), -1000.0, np.float32)
        hollow = np.zeros(slab.shape, bool)
        for cx, cy, _ in centres:
            rho = np.sqrt(((x - cx) / (rx + 0.5)) ** 2 + ((y - cy) / (ry + 0.5)) ** 2)
            slab[((np.abs(rho - 1) * (ry + 0.5) <= 0.5) & (y <= cy)) & np.ones_like(z, bool)] = 120
            hollow |= (rho < 1) & np.ones_like(z, bool)
        deck = (np.abs(y + 0.5) <= 0.5) & ~hollow
        slab[deck] = 120
        line = ((y - ry * np.sqrt(1 - (10 / rz) ** 2) - 0.3) ** 2 + (z - 10) ** 2 <= 0.25) & (
            np.ones_like(x, bool)
        )
        slab[line] = 120
        for cx, cy, cz in centres:
            body = ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 + ((z - cz) / rz) ** 2 <= 1
            slab[body] = 40
            slab[body & ((x - cx) ** 2 + (y - cy - 4) ** 2 <= 1.44) & (np.abs(z - cz) <= 32)] = 1000
            for side in (-1, 1):
                lung = ((x - cx - 4 * side) / 3) ** 2 + ((y - cy) / 3) ** 2
                slab[(lung + ((z - cz - 18) / 7) ** 2) <= 1] = -700
        slab += rng.normal(0.0, 20.0, slab.shape).astype(np.float32)
        hu[:, :, k0:k1] = slab
    return hu, affine, centres


def peak_mb() -> float:
    """This process's peak resident memory (VmHWM, MB)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak() -> None:
    """Reset VmHWM to the current resident size (Linux: clear_refs 5)."""
    Path("/proc/self/clear_refs").write_text("5")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=(512, 512, 680))
    parser.add_argument("--voxel", type=float, default=0.2)
    parser.add_argument("--mice", type=int, default=4)
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()
    t = time.perf_counter()
    hu, affine, centres = build(tuple(args.shape), args.voxel, args.mice, np.dtype(args.dtype))
    print(
        f"built {hu.shape} {hu.dtype} CT ({hu.nbytes / 2**20:.0f} MB) at {args.voxel} mm "
        f"in {time.perf_counter() - t:.1f} s; peak so far {peak_mb():.0f} MB"
    )
    reset_peak()
    base = peak_mb()
    t = time.perf_counter()
    bodies = split.find_bodies(hu, affine)
    print(
        f"find_bodies: {time.perf_counter() - t:.2f} s, peak RSS {peak_mb():.0f} MB "
        f"(+{peak_mb() - base:.0f} MB over the CT in memory)"
    )
    for b, c in zip(bodies, centres, strict=False):
        print(
            f"  body {b.index}: centre {np.round(b.centre_mm, 1)} (true {c}), "
            f"{b.volume_ml:.1f} mL, box {split.format_box_mm(b.box_mm)}"
        )
    if len(bodies) != len(centres):
        print(f"  WRONG COUNT: {len(bodies)} bodies for {len(centres)} mice")
    rows = [{"animal_id": f"M{k}", "scan_position": k} for k in range(1, args.mice + 1)]
    with tempfile.TemporaryDirectory() as tmp:
        reset_peak()
        t = time.perf_counter()
        split.split_scan(hu, affine, rows, "bench", Path(tmp) / "split.png")
        print(
            f"split_scan (with QC figure): {time.perf_counter() - t:.2f} s, "
            f"peak RSS {peak_mb():.0f} MB (+{peak_mb() - base:.0f} MB)"
        )


if __name__ == "__main__":
    main()
