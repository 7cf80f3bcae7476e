"""Per-organ quantification of an emission image, decay-corrected to the injection time.

Reference time: every concentration is decay-corrected to the injection (administration)
time of what the scan images — the tracer injection for reporter-gene scans, the cell
infusion for ex vivo labelled cells — because the injected activity (ID) is known at that
time, and %ID/g needs C and ID at one time (DOMAIN.md §3).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import pandas as pd

from homing import HomingError
from homing.core.decay import (
    activity_per_cell_bq,
    decay_factor,
    mean_decay_over_frame,
    on_one_clock,
    seconds_between,
)
from homing.core.nuclides import nuclide_named
from homing.core.suv import suv_bw_per_bq_per_ml
from homing.quant import detection, exvivo, pvc, regions
from homing.quant.density import organ_density


def to_injection_factor(sidecar: dict) -> float | np.ndarray:
    """Factor turning the image's stored Bq/mL into Bq/mL decay-corrected to injection.

    * START/ADMIN: the image is corrected to ``DecayCorrectionDateTime`` (ADMIN: the injection
      time the scanner used, which a sheet override may differ from); correct from there.
    * NONE: a static frame holds the frame-average concentration; undo the in-frame decay
      (λΔt / (1 − e^(−λΔt))) to the frame start, then correct to injection.
    * NONE with several beds (``BedPositions`` with more than one entry): each bed was
      acquired at its own time, so the factor is per slice: an array of shape (1, 1, nz),
      broadcastable to the (x, y, z) volume, that holds for every slice k its bed's factor
      (its own duration and ``Start_s``). Each slice takes the timing of the bed its header
      names; where the scanner blended overlapping beds into one slice, the blend weights are
      unknown and that slice is corrected with the named bed (the usual stitched exports have
      one bed per slice). Otherwise a float.
    """
    half_life_s = float(sidecar["HalfLife_s"])
    injection = datetime.fromisoformat(sidecar["InjectionDateTime"])
    if sidecar.get("ImageDecayCorrected"):
        ref = datetime.fromisoformat(sidecar["DecayCorrectionDateTime"])
        return 1.0 / decay_factor(seconds_between(injection, ref), half_life_s)
    starts, durations = sidecar.get("FrameTimesStart"), sidecar.get("FrameDuration")
    if not starts or not durations or len(starts) != 1:
        raise HomingError(
            f"{sidecar.get('SeriesInstanceUID')}: image is not decay-corrected and is not a "
            "single static frame; dynamic uncorrected images are not supported yet"
        )
    scan_start = datetime.fromisoformat(sidecar["ScanStartDateTime"])
    beds = sidecar.get("BedPositions") or []
    if len(beds) > 1:
        return _per_slice_factor(sidecar, beds, seconds_between(injection, scan_start))
    frame_start_s = seconds_between(injection, scan_start) + float(starts[0])
    return (
        1.0
        / mean_decay_over_frame(durations[0], half_life_s)
        / decay_factor(frame_start_s, half_life_s)
    )


def _per_slice_factor(sidecar: dict, beds: list[dict], scan_after_injection_s: float):
    """(1, 1, nz) factors of an uncorrected multi-bed image (see :func:`to_injection_factor`)."""
    uid = sidecar.get("SeriesInstanceUID")
    half_life_s = float(sidecar["HalfLife_s"])
    shape = sidecar.get("ImageShape")
    missing = [
        key
        for key in ("Start_s", "FrameDuration_s", "Slices")
        if any(b.get(key) is None for b in beds)
    ]
    if missing:
        raise HomingError(
            f"{uid}: the image is not decay-corrected (DecayCorrection NONE) and has "
            f"{len(beds)} bed positions, but the sidecar lacks their {', '.join(missing)}: "
            "each bed must be corrected for its own acquisition time. Ingest the DICOM again "
            "with this version (it records them), or export the image decay-corrected (START)"
        )
    nz = int(shape[2]) if shape else 1 + max(run[1] for b in beds for run in b["Slices"])
    factor = np.full(nz, np.nan)
    owner = np.full(nz, -1)
    for i, bed in enumerate(beds):
        value = (
            1.0
            / mean_decay_over_frame(bed["FrameDuration_s"], half_life_s)
            / decay_factor(scan_after_injection_s + float(bed["Start_s"]), half_life_s)
        )
        for first, last in bed["Slices"]:
            if not 0 <= first <= last < nz:
                raise HomingError(f"{uid}: bed {i + 1} slices {first}..{last} outside 0..{nz - 1}")
            taken = owner[first : last + 1]
            if (taken >= 0).any():
                raise HomingError(
                    f"{uid}: slice {first + int(np.argmax(taken >= 0))} belongs to beds "
                    f"{int(taken.max()) + 1} and {i + 1}; an uncorrected image needs one "
                    "acquisition time per slice"
                )
            owner[first : last + 1] = i
            factor[first : last + 1] = value
    if (owner < 0).any():
        raise HomingError(
            f"{uid}: slice {int(np.argmax(owner < 0))} belongs to no bed; its acquisition time "
            "is unknown"
        )
    return factor.reshape(1, 1, nz)


#: animals.tsv columns holding times.
ANIMAL_TIMES = ("labelling_datetime", "infusion_datetime")
#: The animals.tsv columns the organ tables and their checks read (:mod:`crosscheck`); the
#: workflow passes these alone, so editing another column (strain, sex, notes) reruns nothing.
ANIMAL_COLUMNS = (
    "animal_id",
    "cohort",
    "labelling_method",
    "label_name",
    "label_nuclide",
    "labelling_datetime",
    "labelling_specific_activity_kbq_per_1e6_cells",
    "cells_infused",
    "infusion_datetime",
    "activity_infused_mbq",
    "body_weight_g",
)
#: The scans.tsv columns the organ tables read (the overrides reach them through ingest).
SCAN_COLUMNS = ("animal_id", "session_id", "modality")


def _as_datetime(value) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))


def animal_time(animal: dict, column: str, scanner: datetime) -> tuple[datetime, datetime]:
    """(animals.tsv ``column`` time, scanner time from the sidecar) on one clock.

    By :func:`homing.core.decay.on_one_clock`: a sheet time without offset is the scanner's local
    time; one with an offset is absolute. When the scanner time has none (no
    TimezoneOffsetFromUTC, no offset in scans.tsv injection_datetime), the offset of the
    animal's sheet times is taken as the scanner's; if those times disagree on their offset
    the scanner's zone is ambiguous and this is an error.
    """
    value = _as_datetime(animal[column])
    if scanner.tzinfo is None and value.tzinfo is not None:
        offsets = {
            c: _as_datetime(animal[c]).isoformat()
            for c in ANIMAL_TIMES
            if isinstance(animal.get(c), (str, datetime)) and animal.get(c) != ""
        }
        if len({_as_datetime(v).utcoffset() for v in offsets.values()}) > 1:
            raise HomingError(
                f"{animal.get('animal_id')}: animals.tsv "
                + ", ".join(f"{c} = {v}" for c, v in offsets.items())
                + " have different UTC offsets and the scan's times have none (DICOM without "
                "TimezoneOffsetFromUTC (0008,0201)), so the scanner's time zone is ambiguous. "
                "Give the scan's injection_datetime in scans.tsv with the scanner's offset, or "
                "write the animals.tsv times without an offset (scanner local time)"
            )
    return on_one_clock(value, scanner)


def images_the_label(animal: dict, nuclide: str) -> bool:
    """Whether a scan of ``nuclide`` images the animal's ex vivo label, by canonical name:
    the sheet may write "Zr-89" for the header's "89Zr"."""
    label = animal.get("label_nuclide")
    return isinstance(label, str) and nuclide_named(label).name == nuclide_named(nuclide).name


def label_equivalent_cells_per_bq(animal: dict, injection: datetime, nuclide: str) -> float:
    """Cells per Bq of label at the injection time, for ex vivo labelled cells.

    a_cell(t) = specific activity at labelling (kBq per 10⁶ cells) decayed from the labelling
    time to t. Division leaves organ totals unchanged, so activity / a_cell counts original
    labelled cells' worth of label, not live cells. NaN when the animal is not ex vivo
    labelled or the scan is of another nuclide (its rows are flagged: homing.quant.crosscheck).
    """
    if animal.get("labelling_method") != "ex_vivo" or not images_the_label(animal, nuclide):
        return float("nan")
    labelled, injection = animal_time(animal, "labelling_datetime", injection)
    a_cell_bq = activity_per_cell_bq(
        float(animal["labelling_specific_activity_kbq_per_1e6_cells"]),
        labelled,
        injection,
        nuclide_named(nuclide).half_life_s,
    )
    return 1.0 / a_cell_bq


@dataclass(frozen=True)
class QuantSettings:
    """What the organ table needs from the config (``quantification``), units in the names.

    ``tissue_density_g_per_ml``: the %ID/g convention (1 g/mL in the field).
    ``organ_density_g_per_ml``: per-organ density overrides (:mod:`homing.quant.density`).
    ``psf_fwhm_mm``: the scanner's reconstructed resolution, for the partial-volume
    correction. ``peak_radius_mm``: radius of the peak sphere. ``recovery_flag_below``:
    regional recovery under which a row is flagged small_organ_partial_volume;
    ``spill_in_flag_above``: the recovery above which it is flagged pvc_spill_in_dominated.
    ``min_recovery``, ``max_condition``: the GTM's fallback thresholds (:mod:`pvc`).
    ``reference_time``: "injection", "infusion", "labelling" or an ISO 8601 datetime.
    """

    psf_fwhm_mm: float
    tissue_density_g_per_ml: float = 1.0
    organ_density_g_per_ml: dict = field(default_factory=dict)
    peak_radius_mm: float = 1.0
    recovery_flag_below: float = 0.85
    spill_in_flag_above: float = 2.0
    min_recovery: float = pvc.MIN_RECOVERY
    max_condition: float = pvc.MAX_CONDITION
    reference_time: str = "injection"
    currie_k: float = detection.CURRIE_K
    dose_calibrator_uncertainty: float = 0.05
    labelling_uncertainty: float = 0.10


def settings_from_config(quantification: dict, sidecar: dict, where: str) -> QuantSettings:
    """QuantSettings from the config's ``quantification`` section; the PSF FWHM is the one
    given for the scanner's model (ManufacturersModelName) or the ``default``."""
    partial = quantification["partial_volume"]
    by_model = partial["psf_fwhm_mm"]
    model = sidecar.get("ManufacturersModelName")
    psf = by_model.get(model, by_model.get("default")) if model else by_model.get("default")
    if psf is None:
        raise HomingError(
            f"{where}: config quantification.partial_volume.psf_fwhm_mm has no value for this "
            f"scanner ({model!r}) and no default; give the reconstructed resolution (mm FWHM)"
        )
    return QuantSettings(
        psf_fwhm_mm=float(psf),
        tissue_density_g_per_ml=float(quantification["tissue_density_g_per_ml"]),
        organ_density_g_per_ml=dict(quantification.get("organ_density_g_per_ml") or {}),
        peak_radius_mm=float(quantification["peak_sphere_radius_mm"]),
        recovery_flag_below=float(partial["recovery_flag_below"]),
        spill_in_flag_above=float(partial["spill_in_flag_above"]),
        min_recovery=float(partial["min_recovery"]),
        max_condition=float(partial["max_condition"]),
        reference_time=str(quantification["reference_time"]),
        currie_k=float(quantification["detection"]["currie_k"]),
        dose_calibrator_uncertainty=float(
            quantification["detection"]["dose_calibrator_uncertainty"]
        ),
        labelling_uncertainty=float(quantification["detection"]["labelling_uncertainty"]),
    )


def reference_datetime(reference: str, sidecar: dict, animal: dict) -> datetime:
    """The datetime activities are decay-corrected to: the scan's injection, the animal's
    cell infusion or labelling (animals.tsv, on the scanner's clock), or a given ISO 8601
    datetime (the scanner's local time unless it carries an offset)."""
    injection = datetime.fromisoformat(sidecar["InjectionDateTime"])
    if reference == "injection":
        return injection
    if reference in ("infusion", "labelling"):
        column = f"{reference}_datetime"
        value = animal.get(column)
        if not isinstance(value, (str, datetime)) or value == "":
            raise HomingError(
                f"{animal.get('animal_id')}: config quantification.reference_time is "
                f"{reference}, but animals.tsv has no {column} for this animal; give it, or "
                "choose reference_time: injection"
            )
        return animal_time(animal, column, injection)[0]
    try:
        given = datetime.fromisoformat(reference)
    except ValueError:
        raise HomingError(
            f"config quantification.reference_time: {reference!r} is not injection, "
            "infusion, labelling or an ISO 8601 datetime (e.g. 2026-03-02T10:00:00)"
        ) from None
    return on_one_clock(given, injection)[0]


def organ_table(
    pet_bq_per_ml: np.ndarray,
    fractions: np.ndarray,
    fraction_labels,
    pet_voxel_mm,
    sidecar: dict,
    organs: pd.DataFrame,
    animal: dict,
    settings: QuantSettings,
) -> pd.DataFrame:
    """One row per organ: volume, activity, mean, max and peak Bq/mL, %ID, %ID/g (at the
    convention's and at the organ's density), SUVbw and label-equivalent cells, each without
    and with partial-volume correction (``…_pvc``), and the flags.

    ``fractions`` [x, y, z, n] are the organs' fractional masks on the PET grid, in the
    order of ``fraction_labels``; ``organs`` is the scan's label table (label, name and
    optionally source: "atlas", "user_mask" or "threshold"). The image is first
    decay-corrected to the injection (:func:`to_injection_factor`, voxel-wise when it varies
    by slice); activities are also given at ``settings.reference_time``.
    """
    if pet_bq_per_ml.ndim != 3 or fractions.shape[:3] != pet_bq_per_ml.shape:
        raise HomingError(
            f"PET {pet_bq_per_ml.shape} and its fractional masks {fractions.shape} are on "
            "different grids"
        )
    at_injection = _at_injection(pet_bq_per_ml, sidecar)
    names = [str(organs.set_index("label").name.get(int(v), f"label_{v}")) for v in fraction_labels]
    stats = regions.region_stats(at_injection, fractions, pet_voxel_mm, settings.peak_radius_mm)
    stored = regions.region_stats(pet_bq_per_ml, fractions, pet_voxel_mm, None)
    corrected = pvc.gtm_correct(
        at_injection,
        fractions,
        pet_voxel_mm,
        settings.psf_fwhm_mm,
        names=names,
        min_recovery=settings.min_recovery,
        max_condition=settings.max_condition,
    )
    column = {int(v): i for i, v in enumerate(fraction_labels)}
    scan = _scan_constants(sidecar, animal, settings)
    voxel_ml = float(np.prod(np.asarray(pet_voxel_mm, dtype=float))) / 1000.0
    scan["whole_body_retention_fraction"] = (
        exvivo.whole_body_activity_bq(at_injection, voxel_ml) / scan["infused_bq"]
    )
    scan["noise_k"], scan["noise_level"] = _image_noise(at_injection, fractions, names, voxel_ml)
    rows = []
    for organ in organs.itertuples():
        if organ.label == 0:
            continue
        i = column.get(int(organ.label))
        rows.append(
            _organ_row(
                organ,
                stats[i] if i is not None else None,
                stored[i] if i is not None else None,
                corrected.regions[i] if i is not None else None,
                scan,
                settings,
            )
            | {"pvc_condition_number": corrected.condition_number_solved}
        )
    return pd.DataFrame(rows)


def _image_noise(image, fractions, names: list[str], voxel_ml: float) -> tuple[float, float]:
    """The image's noise (K, background level) from its soft-tissue core
    (:func:`homing.quant.detection.noise_variance_volume`); NaN without soft tissue."""
    if "soft_tissue" not in names:
        return math.nan, math.nan
    core = detection.background_core(fractions[..., names.index("soft_tissue")])
    return detection.noise_variance_volume(image, core, voxel_ml)


def _at_injection(pet_bq_per_ml: np.ndarray, sidecar: dict) -> np.ndarray:
    """The image in Bq/mL decay-corrected to the injection (float64)."""
    to_inj = to_injection_factor(sidecar)
    if isinstance(to_inj, np.ndarray) and to_inj.shape[2] != pet_bq_per_ml.shape[2]:
        raise HomingError(
            f"{sidecar.get('SeriesInstanceUID')}: per-slice decay factors for "
            f"{to_inj.shape[2]} slices (the bed positions of the ingested image) do not fit a "
            f"PET of shape {pet_bq_per_ml.shape}"
        )
    return np.asarray(pet_bq_per_ml, dtype=np.float64) * to_inj


def _scan_constants(sidecar: dict, animal: dict, settings: QuantSettings) -> dict:
    """Per-scan numbers every organ row uses: injected Bq, weight g, cells per Bq, and the
    decay factor from the injection to the reference time."""
    injection = datetime.fromisoformat(sidecar["InjectionDateTime"])
    reference = reference_datetime(settings.reference_time, sidecar, animal)
    half_life_s = nuclide_named(sidecar["TracerRadionuclide"]).half_life_s
    cells_per_bq = label_equivalent_cells_per_bq(animal, injection, sidecar["TracerRadionuclide"])
    return {
        "injected_bq": float(sidecar["InjectedRadioactivity"]) * 1e6,
        # A scan of the ex vivo label: its injection is the infusion (crosscheck checks it).
        "infused_bq": exvivo.infused_activity_bq(animal)
        if cells_per_bq == cells_per_bq
        else math.nan,
        "weight_g": float(sidecar["BodyWeight"]) * 1000.0,
        "cells_per_bq": cells_per_bq,
        "reference": settings.reference_time,
        "reference_datetime": reference.isoformat(),
        "to_reference": decay_factor(seconds_between(injection, reference), half_life_s),
    }


def _organ_row(organ, stat, stored, corrected, scan: dict, settings: QuantSettings) -> dict:
    """The table row of one organ (``stat``/``corrected`` None: not on the PET grid)."""
    density, density_source = organ_density(organ.name, settings.organ_density_g_per_ml)
    flags = []
    if stat is None or stat.volume_ml == 0:
        flags.append("not_on_pet_grid")
        stat = stored = regions.RegionStats(0.0, 0, 0.0, *[float("nan")] * 4)
        mean_pvc, recovery = float("nan"), float("nan")
    else:
        mean_pvc, recovery = corrected.corrected_bq_per_ml, corrected.regional_recovery
        if corrected.flag:
            flags.append(corrected.flag)
        if recovery < settings.recovery_flag_below:
            flags.append("small_organ_partial_volume")
        elif recovery > settings.spill_in_flag_above:
            # Most of what the region shows came from its neighbours: an error ε in that
            # spill-in (registration, PSF) moves the corrected value by ε·(recovery − 1).
            flags.append("pvc_spill_in_dominated")
    row = {
        "organ": organ.name,
        "label": int(organ.label),
        "region_source": getattr(organ, "source", "atlas"),
        "volume_ml": stat.volume_ml,
        "pet_voxels": stat.core_voxels,
        "mean_bq_per_ml_as_stored": stored.mean_bq_per_ml,
        "sd_bq_per_ml_as_stored": stored.sd_bq_per_ml,
        "mean_bq_per_ml_at_injection": stat.mean_bq_per_ml,
        "max_bq_per_ml_at_injection": stat.max_bq_per_ml,
        "peak_bq_per_ml_at_injection": stat.peak_bq_per_ml,
        "peak_sphere_radius_mm": settings.peak_radius_mm,
        "injected_activity_bq": scan["injected_bq"],
        "tissue_density_g_per_ml": settings.tissue_density_g_per_ml,
        "organ_density_g_per_ml": density,
        "organ_density_source": density_source,
        "reference_time": scan["reference"],
        "reference_datetime": scan["reference_datetime"],
        "pvc_recovery": recovery,
        "whole_body_retention_fraction": scan["whole_body_retention_fraction"],
    }
    for suffix, mean in (("", stat.mean_bq_per_ml), ("_pvc", mean_pvc)):
        row |= _derived(mean, stat.volume_ml, density, scan, settings, suffix)
    gain = corrected.recovery_coefficient if corrected is not None else math.nan
    row |= _detection(row, stat, gain, scan, settings)
    if row["label_equivalent_cells_pvc"] < row["min_detectable_cells"]:
        flags.append("below_detection_limit")
    row["flags"] = ";".join(flags)
    return row


def _detection(row: dict, stat, recovery_coefficient: float, scan: dict, settings) -> dict:
    """Image noise of the organ's mean, Currie's detection limit and the minimum
    detectable cells, and the 95 % interval of the (corrected) label-equivalent cells
    (:mod:`homing.quant.detection`). A detection in the image sees only the organ's
    recovered share (G_ii) of its own activity, so the limit in true activity is divided
    by it."""
    sd = detection.mean_sd(
        scan["noise_k"], scan["noise_level"], stat.volume_ml, stat.mean_bq_per_ml
    )
    limit_bq = detection.detection_limit_bq(sd, stat.volume_ml, settings.currie_k)
    limit_bq = limit_bq / recovery_coefficient if recovery_coefficient > 0 else math.nan
    cells = row["label_equivalent_cells_pvc"]
    image_sd_cells = sd * stat.volume_ml / max(recovery_coefficient, 1e-12) * scan["cells_per_bq"]
    low, high = detection.cell_interval(
        cells,
        image_sd_cells,
        settings.dose_calibrator_uncertainty,
        settings.labelling_uncertainty,
    )
    return {
        "noise_sd_of_mean_bq_per_ml": sd,
        "detection_limit_bq_at_injection": limit_bq,
        "min_detectable_cells": limit_bq * scan["cells_per_bq"],
        "label_equivalent_cells_pvc_low95": low,
        "label_equivalent_cells_pvc_high95": high,
    }


def _derived(mean, volume_ml, density, scan: dict, settings: QuantSettings, suffix: str):
    """Totals, %ID, %ID/g, SUVbw and cells from a mean at injection (Bq/mL); ``suffix``
    marks the partial-volume-corrected set."""
    injected = scan["injected_bq"]
    total = mean * volume_ml
    return {
        f"mean_bq_per_ml_at_injection{suffix}": mean,
        f"total_activity_bq_at_injection{suffix}": total,
        f"total_activity_bq_at_reference{suffix}": total * scan["to_reference"],
        f"percent_injected_dose{suffix}": 100.0 * total / injected,
        f"percent_id_per_g{suffix}": 100.0 * mean / (injected * settings.tissue_density_g_per_ml),
        f"percent_id_per_g_organ_density{suffix}": 100.0 * mean / (injected * density),
        f"suv_bw_g_per_ml{suffix}": mean * suv_bw_per_bq_per_ml(scan["weight_g"], injected),
        f"label_equivalent_cells{suffix}": total * scan["cells_per_bq"],
        f"fraction_of_infused_activity{suffix}": total / scan["infused_bq"],
    }


def with_registration_qc(table: pd.DataFrame, regqc: dict, pet_to_ct: dict) -> pd.DataFrame:
    """Add the scan's registration QC metrics as columns and its QC flags to every row's
    ``flags``, so a badly registered scan cannot be used without it showing. The PET → CT
    record's own QC flags (``pet_ct_qc_flags``, e.g. pet_ct_qc_activity_outside_body)
    travel the same way."""
    metrics = regqc.get("metrics", {})
    scan_flags = list(regqc.get("flags", []))
    if pet_to_ct.get("identity_rejected"):
        scan_flags.append("pet_ct_misaligned_despite_shared_frame")
    scan_flags += [f for f in pet_to_ct.get("pet_ct_qc_flags", []) if f not in scan_flags]
    out = table.copy()
    for key in ("body_dice", "skeleton_dice", "jacobian_min", "jacobian_max"):
        out[f"registration_{key}"] = float(metrics.get(key, float("nan")))
    out["pet_to_ct_method"] = pet_to_ct.get("method", "")
    return with_flags(out, scan_flags)


def with_flags(table: pd.DataFrame, scan_flags: list[str]) -> pd.DataFrame:
    """Append flags that hold for the whole scan to every row's ``flags``."""
    out = table.copy()
    out["flags"] = [";".join(flag_list(existing) + list(scan_flags)) for existing in out["flags"]]
    return out


def scan_columns(sidecar: dict, animal: dict, scan: dict) -> dict:
    """Per-scan identifiers and times that travel with every organ row (hours, days).

    days_since_infusion compares the animals.tsv infusion time with the scan start on one
    clock (:func:`animal_time`): a naive sheet time against an aware DICOM time, or the
    reverse, is not a TypeError but follows the project's time-zone rule."""
    injection = datetime.fromisoformat(sidecar["InjectionDateTime"])
    scan_start = datetime.fromisoformat(sidecar["ScanStartDateTime"])
    infusion = animal.get("infusion_datetime")
    days = (
        seconds_between(*animal_time(animal, "infusion_datetime", scan_start)) / 86400.0
        if isinstance(infusion, (str, datetime)) and infusion != ""
        else float("nan")
    )
    return {
        "animal_id": scan["animal_id"],
        "session_id": scan["session_id"],
        "cohort": animal["cohort"],
        "labelling_method": animal["labelling_method"],
        # The label (ex vivo) or the reporter gene (reporter cohorts), e.g. NIS.
        "label_name": animal.get("label_name", ""),
        "modality": scan["modality"],
        "tracer": sidecar.get("TracerName", ""),
        "tracer_nuclide": sidecar["TracerRadionuclide"],
        "injection_datetime": sidecar["InjectionDateTime"],
        "scan_start_datetime": sidecar["ScanStartDateTime"],
        "hours_since_injection": seconds_between(injection, scan_start) / 3600.0,
        "days_since_infusion": days,
        "body_weight_g": float(sidecar["BodyWeight"]) * 1000.0,
    }


def with_scan_columns(table: pd.DataFrame, columns: dict) -> pd.DataFrame:
    """Prefix the organ table with the scan's identifier columns."""
    front = pd.DataFrame([columns] * len(table), index=table.index)
    return pd.concat([front, table], axis=1)


def flag_list(cell) -> list[str]:
    """The flags of a table cell (empty, NaN or ";"-separated)."""
    return [f for f in str(cell).split(";") if f] if cell == cell else []


def combine_sessions(
    tables: list[pd.DataFrame], free_label_rise_percent_id: float = math.inf
) -> pd.DataFrame:
    """Stack per-scan organ tables in time order (per animal or whole study). Rows of an ex
    vivo labelled animal's sessions where its skeleton %ID rose by more than
    ``free_label_rise_percent_id`` points since its previous session get the flag
    free_label_skeleton_rising (label freed by dead cells goes to bone)."""
    if not tables:
        raise HomingError("no per-scan tables to combine")
    out = pd.concat(tables, ignore_index=True)
    out = out.sort_values(
        ["animal_id", "scan_start_datetime", "label"], kind="stable", ignore_index=True
    )
    rising = pd.Series(False, index=out.index)
    for _, rows in out[out.labelling_method == "ex_vivo"].groupby("animal_id"):
        rising |= exvivo.free_label_rising(rows, free_label_rise_percent_id).reindex(
            out.index, fill_value=False
        )
    if rising.any():
        out.loc[rising, "flags"] = [
            ";".join(
                [f for f in str(v).split(";") if f and v == v] + ["free_label_skeleton_rising"]
            )
            for v in out.loc[rising, "flags"]
        ]
    return out
