"""Transform files: reading linear ITK transforms (with or without ANTs), writing the
identity, and how far a transform moves points.

Conventions (ITK/ANTs): a transform written by a registration with ``fixed`` F and
``moving`` M maps points of F's space to M's space; listing it in ``apply_transforms``
with F as reference resamples M onto F's grid. To chain registrations (atlas → reference
session → this session), list this session's transforms (fixed = this CT) first, then the
reference session's (fixed = reference CT): one resampling through the whole chain.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from homing.core import io
from homing.registration.ants import load_ants

#: RAS ↔ LPS for 4 × 4 point maps (its own inverse).
_LPS_4 = np.diag([-1.0, -1.0, 1.0, 1.0])


def lps_to_ras(matrix_lps: np.ndarray) -> np.ndarray:
    """A 4 × 4 point map in LPS mm (ITK's) as the same map in RAS mm (nibabel's)."""
    return _LPS_4 @ matrix_lps @ _LPS_4


def write_identity_transform(path: Path) -> None:
    """The identity as a linear ITK transform file: MATLAB v4, byte for byte what ANTs writes
    for it, without importing ANTs (seconds of a short job)."""
    from scipy.io import savemat

    with io.atomic_path(path) as tmp, open(tmp, "wb") as f:
        savemat(
            f,
            {
                "AffineTransform_double_3_3": np.r_[np.eye(3).ravel(), np.zeros(3)][:, None],
                "fixed": np.zeros((3, 1)),
            },
            format="4",
        )


def transform_displacement_mm(mat: Path, points_lps: np.ndarray) -> tuple[float, float]:
    """(RMS, max) distance (mm) a transform file moves ``points_lps`` (an N × 3 array)."""
    ants = load_ants()
    tx = ants.read_transform(str(mat))
    moved = np.array([tx.apply_to_point(tuple(p)) for p in points_lps])
    dist = np.linalg.norm(moved - points_lps, axis=1)
    return float(np.sqrt(np.mean(dist**2))), float(dist.max())


def transform_matrix_lps(mat: Path) -> np.ndarray:
    """The 4 × 4 matrix (LPS mm → LPS mm) of a linear ANTs transform file."""
    ants = load_ants()
    tx = ants.read_transform(str(mat))
    basis = [np.zeros(3), *np.eye(3)]
    moved = np.array([tx.apply_to_point(tuple(p)) for p in basis])
    out = np.eye(4)
    out[:3, 3] = moved[0]
    out[:3, :3] = (moved[1:] - moved[0]).T
    return out


def linear_transform_lps(mat: Path) -> np.ndarray:
    """The 4 × 4 matrix (LPS mm → LPS mm) of a linear ITK transform file (.mat), read with
    scipy: ``A (x − c) + c + t`` from its 12 parameters (A row-major, then t) and its fixed
    centre c. Same matrix as transform_matrix_lps, without ``import ants`` (≈ 2 s of CPU).
    Other transform types go through transform_matrix_lps."""
    from scipy.io import loadmat

    data = loadmat(str(mat))
    key = next((k for k in data if k.startswith("AffineTransform_") and k.endswith("_3_3")), None)
    if key is None or "fixed" not in data or np.size(data[key]) != 12:
        return transform_matrix_lps(mat)
    params = np.asarray(data[key], dtype=float).ravel()
    centre = np.asarray(data["fixed"], dtype=float).ravel()
    a = params[:9].reshape(3, 3)
    out = np.eye(4)
    out[:3, :3] = a
    out[:3, 3] = params[9:] + centre - a @ centre
    return out
