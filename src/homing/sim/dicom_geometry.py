"""Slice geometry of a DICOM series written from a voxel grid: the RAS affine checked and
turned into LPS direction cosines, spacings and slice positions (all lengths in mm)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from homing.sim.dicom_values import format_ds

#: Largest |cos| between two voxel axes still taken as orthogonal.
ORTHO_TOL = 1e-6


@dataclass(frozen=True)
class SliceGeometry:
    """A voxel grid as DICOM describes it: one slice per k, in LPS millimetres."""

    row_dir: np.ndarray  # LPS unit vector along i (first IOP vector)
    col_dir: np.ndarray  # LPS unit vector along j (second IOP vector)
    normal: np.ndarray  # row_dir x col_dir
    spacing: tuple[float, float, float]  # mm along i, j, k
    lps: np.ndarray  # 4x4 voxel -> LPS affine

    def position(self, k: int) -> np.ndarray:
        """LPS position (mm) of the centre of the first voxel of slice ``k``."""
        return (self.lps @ np.array([0.0, 0.0, float(k), 1.0]))[:3]


def slice_geometry(affine_ras: np.ndarray) -> SliceGeometry:
    """The DICOM geometry of a 4x4 voxel -> RAS mm affine; rejects sheared or degenerate grids."""
    aff = np.asarray(affine_ras, dtype=float)
    if aff.shape != (4, 4) or not np.all(np.isfinite(aff)):
        raise ValueError(f"affine_ras must be a finite 4x4 array, got shape {aff.shape}")
    if not np.allclose(aff[3], [0.0, 0.0, 0.0, 1.0]):
        raise ValueError(f"affine_ras last row must be [0, 0, 0, 1], got {aff[3]}")
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ aff
    cols = lps[:3, :3]
    spacing = np.linalg.norm(cols, axis=0)
    if np.any(spacing <= 0):
        raise ValueError(f"affine_ras has a zero-length voxel axis: spacings {spacing}")
    units = cols / spacing
    for a, b in ((0, 1), (0, 2), (1, 2)):
        cos = abs(float(units[:, a] @ units[:, b]))
        if cos > ORTHO_TOL:
            raise ValueError(
                f"affine_ras columns {a} and {b} are not orthogonal (|cos| = {cos:.3g}); "
                "DICOM single-frame series cannot hold sheared grids"
            )
    normal = np.cross(units[:, 0], units[:, 1])
    return SliceGeometry(
        row_dir=units[:, 0],
        col_dir=units[:, 1],
        normal=normal,
        spacing=(float(spacing[0]), float(spacing[1]), float(spacing[2])),
        lps=lps,
    )


def snap_zero(v: float) -> float:
    """Snap rounding noise (|v| < 1e-12) to zero so direction cosines read cleanly."""
    return 0.0 if abs(v) < 1e-12 else float(v)


def image_position(geom: SliceGeometry, k: int) -> list[str]:
    """ImagePositionPatient (0020,0032) of slice ``k`` as DS text (mm)."""
    return [format_ds(snap_zero(v)) for v in geom.position(k)]


def image_orientation(geom: SliceGeometry) -> list[str]:
    """ImageOrientationPatient (0020,0037): row then column direction cosines as DS text."""
    return [format_ds(snap_zero(v)) for v in (*geom.row_dir, *geom.col_dir)]
