"""Voxel-grid geometry shared by the stages that relate one grid to another."""

from __future__ import annotations

import numpy as np


def corner_voxels(shape: tuple[int, ...]) -> np.ndarray:
    """The 8 corner voxel indices of a 3-D grid of ``shape`` as homogeneous columns (4 × 8):
    an affine map of a grid reaches its extremes at these, so they bound every voxel."""
    return np.array(
        [
            [i, j, k, 1.0]
            for i in (0, shape[0] - 1)
            for j in (0, shape[1] - 1)
            for k in (0, shape[2] - 1)
        ]
    ).T
