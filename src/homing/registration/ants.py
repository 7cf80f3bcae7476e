"""ANTsPy for Homing: its import (lazy, and without the subpackages Homing never calls), the
thread pin that makes it reproducible, and images on a NIfTI grid.

Two ways in, both here: :func:`load_ants` imports the ``ants`` package (registration,
transform files, resampling through ANTsPy's Python API); :func:`load_ants_lib` loads only
its compiled ITK/ANTs library, for jobs that call antsApplyTransforms alone and should not
pay for ``import ants``. Neither imports anything before it is called.
"""

from __future__ import annotations

import functools
import importlib.machinery
import importlib.util
import os
import sys
import types
from pathlib import Path

import numpy as np


def set_threads(threads: int) -> None:
    """Pin ITK's thread pool: with one thread ANTs registration is bit-reproducible."""
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(int(threads))


#: ANTsPy subpackages Homing never calls. ``import ants`` imports every subpackage eagerly,
#: and these pull in scikit-learn, statsmodels and matplotlib: 2.2 s of a job's start on
#: this project's machines, against ~0.9 s without them. ``load_ants`` puts an empty module
#: in their place before the first import; what Homing calls (core, ops, registration, utils)
#: does not import them.
UNUSED_ANTS_SUBPACKAGES = (
    "contrib",
    "deeplearn",
    "label",
    "learn",
    "math",
    "plotting",
    "segmentation",
)


class _UnusedSubpackage(types.ModuleType):
    """Stands in for an ANTsPy subpackage Homing does not import (UNUSED_ANTS_SUBPACKAGES)."""

    __all__: list[str] = []

    def __getattr__(self, attr: str):
        raise AttributeError(
            f"{self.__name__}.{attr}: Homing imports ANTsPy without {self.__name__} "
            "(homing.registration.ants.UNUSED_ANTS_SUBPACKAGES); import ants before "
            "homing to use it"
        )


def load_ants():
    """ANTsPy, imported on first use (heavy, and only registration needs it), without the
    subpackages in UNUSED_ANTS_SUBPACKAGES unless something imported ants whole first."""
    if "ants" not in sys.modules:
        for sub in UNUSED_ANTS_SUBPACKAGES:
            sys.modules.setdefault(f"ants.{sub}", _UnusedSubpackage(f"ants.{sub}"))
    import ants

    return ants


@functools.cache
def load_ants_lib():
    """ANTsPy's compiled ITK/ANTs library, without the ``ants`` package around it: ``import
    ants`` costs ≈ 2 s of CPU (it imports matplotlib, scikit-learn and statsmodels), more
    than a label resampling job's work. Calls made through it are the ones ``ants`` makes.
    Loaded once; the module ``load_ants`` imports when ants is already imported."""
    if "ants.lib" in sys.modules:
        return sys.modules["ants.lib"]
    spec = importlib.util.find_spec("ants")  # locates the package, does not run it
    so = next(Path(spec.origin).parent.glob("lib.*.so"))
    loader = importlib.machinery.ExtensionFileLoader("ants.lib", str(so))
    lib_spec = importlib.util.spec_from_file_location("ants.lib", so, loader=loader)
    module = importlib.util.module_from_spec(lib_spec)
    lib_spec.loader.exec_module(module)
    # A later ``import ants`` then reuses this module instead of loading it again.
    sys.modules["ants.lib"] = module
    return module


# --- grids: nibabel (RAS) ↔ ITK/ANTs (LPS) -------------------------------------------------

#: ITK works in LPS; NIfTI affines (nibabel) are RAS. Same voxel index order in both.
RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])


def itk_geometry(affine: np.ndarray) -> tuple[tuple, tuple, np.ndarray]:
    """(origin (LPS mm), spacing (mm), direction cosines (LPS)) of an ITK image on the grid
    of a RAS ``affine`` (mm)."""
    lin = np.asarray(affine, dtype=float)[:3, :3]
    spacing = np.linalg.norm(lin, axis=0)
    origin = tuple(float(v) for v in RAS_TO_LPS @ np.asarray(affine, float)[:3, 3])
    return origin, tuple(float(v) for v in spacing), RAS_TO_LPS @ lin / spacing


def ants_image(arr: np.ndarray, affine: np.ndarray):
    """An ANTs image of ``arr`` (float32) on the grid of a RAS ``affine`` (mm)."""
    ants = load_ants()
    origin, spacing, direction = itk_geometry(affine)
    return ants.from_numpy(
        np.ascontiguousarray(arr, dtype=np.float32),
        origin=origin,
        spacing=spacing,
        direction=direction,
    )


def ras_affine(img) -> np.ndarray:
    """The RAS affine (mm) of an ANTs image's grid."""
    out = np.eye(4)
    out[:3, :3] = RAS_TO_LPS @ np.asarray(img.direction) @ np.diag(img.spacing)
    out[:3, 3] = RAS_TO_LPS @ np.asarray(img.origin)
    return out


def lps_affine(affine: np.ndarray) -> np.ndarray:
    """The 4 × 4 voxel index → LPS mm matrix of a RAS ``affine``'s grid (first 3 axes)."""
    out = np.eye(4)
    out[:3, :] = RAS_TO_LPS @ np.asarray(affine, dtype=float)[:3, :]
    return out
