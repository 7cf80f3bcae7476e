"""Write synthetic PET and CT volumes as realistic DICOM series.

The digital-phantom study generator uses this module so that the real ingest path reads the
same kind of files a preclinical scanner exports. The writer is honest: reading the files back
with plain pydicom (RescaleSlope/RescaleIntercept, ImageOrientationPatient,
ImagePositionPatient, PixelSpacing) recovers the volume it was given, to within the integer
quantisation, in exactly the geometry of ``affine_ras``.

Conventions
-----------
* Volumes are indexed ``[i, j, k]``; ``affine_ras`` is a nibabel-style 4x4 affine mapping
  voxel-centre indices to RAS millimetres. DICOM is LPS, so x and y are negated.
* One file per k-slice (one frame per k-slice for Enhanced PET). Columns = ni (i runs along
  the first ImageOrientationPatient vector), Rows = nj, so the stored pixel array
  ``(rows, cols)`` is ``data[:, :, k].T``.
* ImagePositionPatient is the centre of the first voxel of each slice:
  ``affine @ (0, 0, k, 1)`` converted to LPS.
* Nothing depends on the clock or on randomness: the same inputs give byte-identical files.
  UIDs come from :func:`make_uid`, which hashes text parts.
* A series is written into a hidden temporary folder next to ``folder`` and moved into place
  with :func:`os.replace`, so a crash never leaves a half-written series under the final name.

PET scanner variants (:class:`PetMeta`)
---------------------------------------
* Single-frame PET describes its reconstruction as a modern scanner does:
  ReconstructionMethod (0054,1103) "OSEM3D 2i16s", AttenuationCorrectionMethod (0054,1101)
  "CT-based", ConvolutionKernel (0018,1210) "All-pass" (no post-filter), CorrectedImage
  (0028,0051) with ATTN/SCAT (and DECY when decay-corrected), SeriesType STATIC/DYNAMIC.
* ``injection_tags="time_only"``: the injection is written as RadiopharmaceuticalStartTime
  (0018,1072) only, with no date anywhere, as older scanners do; such a series also lacks
  the optional ReconstructionMethod, AttenuationCorrectionMethod, ScatterCorrectionMethod and
  ConvolutionKernel (only CorrectedImage tells what was corrected).
* ``units="CNTS"`` with ``philips_activity_scale_bq_per_ml``: Philips-style counts. The array
  handed to :func:`write_pet_series` is always in the units named by ``units``; for CNTS the
  caller passes counts (Bq/mL divided by the factor). The factor goes into the Philips private
  block (7053,1009); Bq/mL = (stored * RescaleSlope + RescaleIntercept) * factor.
* ``enhanced=True``: one Enhanced PET Image Storage object (multi-frame, functional groups)
  instead of one file per slice. Frames are stored in a deliberately non-spatial order (see
  :func:`enhanced_frame_order`); readers must sort by InStackPositionNumber (0020,9057) or
  ImagePositionPatient.

Modules
-------
This module is the writer's public API (:func:`write_ct_series`, :func:`write_pet_series` and
the types and helpers their callers need). The rest lives in :mod:`homing.sim.dicom_values`
(value formats, input checks), :mod:`homing.sim.dicom_geometry` (affine -> slice geometry),
:mod:`homing.sim.dicom_common` (UIDs, :class:`SeriesMeta`, modules every image shares),
:mod:`homing.sim.dicom_ct`, :mod:`homing.sim.dicom_pet` (:class:`PetMeta`, emission fields,
Philips block, dynamic frames), :mod:`homing.sim.dicom_enhanced_pet` and
:mod:`homing.sim.dicom_encode` (fast Part 10 encoding, atomic series folders).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from homing.sim.dicom_common import (
    CT_IMAGE_STORAGE,
    ENHANCED_PET_IMAGE_STORAGE,
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION_NAME,
    PET_IMAGE_STORAGE,
    UID_PREFIX,
    SeriesMeta,
    check_series,
    make_uid,
)
from homing.sim.dicom_ct import CT_RESCALE_INTERCEPT, CT_RESCALE_SLOPE, ct_slice_dataset
from homing.sim.dicom_encode import SeriesEncoder, write_series_atomically
from homing.sim.dicom_enhanced_pet import enhanced_frame_order, enhanced_pet_dataset
from homing.sim.dicom_geometry import slice_geometry
from homing.sim.dicom_pet import (
    PET_INT_MAX,
    PHILIPS_ACTIVITY_SCALE_ELEMENT,
    PHILIPS_PET_CREATOR,
    PHILIPS_PET_GROUP,
    PHILIPS_SUV_SCALE_ELEMENT,
    PetMeta,
    check_pet,
    pet_slice_datasets,
    time_frames,
)
from homing.sim.dicom_values import INT16_MAX, INT16_MIN, check_array, check_volume

__all__ = [
    "CT_IMAGE_STORAGE",
    "CT_RESCALE_INTERCEPT",
    "CT_RESCALE_SLOPE",
    "ENHANCED_PET_IMAGE_STORAGE",
    "IMPLEMENTATION_CLASS_UID",
    "IMPLEMENTATION_VERSION_NAME",
    "INT16_MAX",
    "INT16_MIN",
    "PET_IMAGE_STORAGE",
    "PET_INT_MAX",
    "PHILIPS_ACTIVITY_SCALE_ELEMENT",
    "PHILIPS_PET_CREATOR",
    "PHILIPS_PET_GROUP",
    "PHILIPS_SUV_SCALE_ELEMENT",
    "UID_PREFIX",
    "PetMeta",
    "SeriesEncoder",
    "SeriesMeta",
    "enhanced_frame_order",
    "make_uid",
    "write_ct_series",
    "write_pet_series",
]


def write_ct_series(
    folder: Path, hu: np.ndarray, affine_ras: np.ndarray, meta: SeriesMeta
) -> list[Path]:
    """Write a CT volume in Hounsfield units as a CT Image Storage series, one file per k.

    Pixels are stored as int16 with RescaleSlope 1 and RescaleIntercept -1024, so
    ``stored = round(HU) + 1024``. Values are rounded to the nearest integer HU (read-back
    error at most 0.5 HU) and clipped to the representable range [-33792, 31743] HU.
    ``hu`` may be of any real dtype (e.g. int16 HU); it is converted one k-slice at a time and
    each file is written before the next slice is made, so a large CT (512 x 512 x 680) needs
    little memory beyond ``hu`` itself. Returns the written file paths in InstanceNumber order.
    """
    data = check_array("hu", hu)
    geom = slice_geometry(affine_ras)
    check_series(meta)
    if not np.issubdtype(data.dtype, np.integer):
        for k in range(data.shape[2]):
            if not np.all(np.isfinite(data[:, :, k].astype(np.float64))):
                raise ValueError("hu contains NaN or infinite values")
    slices = (
        ct_slice_dataset(data[:, :, k], k, data.shape, geom, meta) for k in range(data.shape[2])
    )
    return write_series_atomically(folder, slices, data.shape[2])


def write_pet_series(
    folder: Path,
    bq_per_ml: np.ndarray,
    affine_ras: np.ndarray,
    meta: SeriesMeta,
    pet: PetMeta,
) -> list[Path]:
    """Write a static PET volume as a PET Image Storage series, one file per k.

    ``bq_per_ml`` is in the units named by ``pet.units`` (Bq/mL for BQML, counts for CNTS;
    see :class:`PetMeta`). Each slice is stored as int16 with its own
    RescaleSlope = max|slice| / 32767 (1 for an all-zero slice) and RescaleIntercept 0; the
    integers are computed from the slope exactly as written in the file, so the read-back error
    is at most half a slope per voxel. DecayCorrection, Units and CorrectedImage are written as
    given in ``pet``; DecayFactor is 1 for START and exp(ln2 * (series start - injection) / T½)
    for ADMIN (omitted for NONE). CNTS adds the Philips private block (7053,1009)/(7053,1000).

    With ``pet.enhanced`` the volume is written instead as a single Enhanced PET Image file
    ``IM_0001.dcm``: frame k (InStackPositionNumber k + 1) gets the same slope, integers and
    ImagePositionPatient as single-frame slice k, stored in :func:`enhanced_frame_order`.

    Dynamic PET: a 4D ``bq_per_ml`` [i, j, k, t] with ``pet.frame_starts_s`` (and optionally
    ``pet.frame_durations_s``) is written as SeriesType DYNAMIC, one file per (t, k) with
    InstanceNumber = ImageIndex = t * nk + k + 1, NumberOfTimeSlices, AcquisitionDate/Time =
    frame start, ActualFrameDuration, FrameReferenceTime = frame start + the decay-weighted
    mid-frame offset of PS3.3 C.8.9.4.1.5 (ms after the series time) and DecayFactor =
    exp(ln2 * t_frame start / T½) relative to the series start (START) or the injection
    (ADMIN). Enhanced: one frame per (k, t) with TemporalPositionIndex t + 1, time frames too
    stored in :func:`enhanced_frame_order`. The values of each frame are as the caller gives
    them (consistent with ``pet.decay_correction``).
    Returns the written file paths in InstanceNumber order.
    """
    raw = np.asarray(bq_per_ml)
    if raw.ndim == 4:
        nt = raw.shape[3]
        if nt < 1:
            raise ValueError(f"bq_per_ml has no time frames: shape {raw.shape}")
        data = np.stack([check_volume("bq_per_ml", raw[..., t]) for t in range(nt)], axis=3)
    else:
        nt = None
        data = check_volume("bq_per_ml", bq_per_ml)
    geom = slice_geometry(affine_ras)
    check_series(meta)
    nuc = check_pet(pet, meta)
    timing = time_frames(pet, nt)
    if pet.enhanced:
        return write_series_atomically(
            folder, [enhanced_pet_dataset(data, geom, meta, pet, nuc, timing)]
        )
    return write_series_atomically(folder, pet_slice_datasets(data, geom, meta, pet, nuc, timing))
