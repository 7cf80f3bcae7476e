"""CT Image Storage slices of the simulator: Hounsfield units stored as int16 with a fixed
rescale, and the nominal micro-CT acquisition."""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset

from homing.sim.dicom_common import CT_IMAGE_STORAGE, SeriesMeta, set_pixels, single_frame_dataset
from homing.sim.dicom_geometry import SliceGeometry
from homing.sim.dicom_values import INT16_MAX, INT16_MIN, format_ds

CT_RESCALE_INTERCEPT = -1024.0
CT_RESCALE_SLOPE = 1.0


def ct_slice_dataset(
    hu_slice: np.ndarray,
    k: int,
    shape: tuple[int, int, int],
    geom: SliceGeometry,
    meta: SeriesMeta,
) -> Dataset:
    """CT slice ``k`` from its HU values [i, j]: rounded to whole HU and clipped to int16."""
    stored = np.rint(hu_slice.astype(np.float64)) - CT_RESCALE_INTERCEPT
    stored = np.clip(stored, INT16_MIN, INT16_MAX).astype(np.int16)
    ds = single_frame_dataset(CT_IMAGE_STORAGE, "CT", meta, geom, shape, k)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.RescaleIntercept = format_ds(CT_RESCALE_INTERCEPT)
    ds.RescaleSlope = format_ds(CT_RESCALE_SLOPE)
    ds.RescaleType = "HU"
    ds.KVP = "50"
    ds.XRayTubeCurrentInuA = "500"
    ds.ExposureTime = 300
    ds.ConvolutionKernel = "FDK"
    ds.WindowCenter = "0"
    ds.WindowWidth = "2000"
    set_pixels(ds, stored)
    return ds
