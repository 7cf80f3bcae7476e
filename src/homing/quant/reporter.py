"""Reporter-gene cohorts: live cells per organ from the tracer signal above normal uptake.

DOMAIN.md §3: live cells = (A_organ − A_normal) / u_cell, where

* A_organ is the organ's partial-volume-corrected activity at the tracer injection, as a
  fraction of the injected dose (``percent_injected_dose_pvc`` / 100);
* A_normal is the organ's normal uptake without reporter cells. It is the control cohort's
  (``labelling_method`` none) %ID/g at the same session, as %ID per mL, times this animal's
  organ volume, so it scales with the animal's own organ mass and dose (1 g/mL convention on
  both sides). Without a control at that session, a configured %ID/g per organ is used
  instead;
* u_cell is the fraction of the injected dose taken up per 10⁶ reporter cells at the scan's
  uptake time. It comes from an in vitro calibration in the config, per reporter
  (animals.tsv ``label_name``) and tracer nuclide. In vitro and subcutaneous calibrations
  only bracket the in vivo uptake (DOMAIN.md §7); the calibration's own uncertainty
  (``relative_sd``) goes into every interval.

Uncertainty of the excess over normal, as a fraction of the dose, from three sources added
in quadrature:

* the image noise of the organ's mean (``detection_limit_bq_at_injection`` / Currie's k,
  per injected Bq);
* the normal uptake's spread between animals. This is the SD over the control animals when
  there are at least 2, but never less than ``normal_uptake_relative_sd`` of the mean (a
  few controls give an unstable SD); with one control, that configured spread;
* the dose calibrator, which is small beside the others.

Organs on the tracer's excretion route (``excretion_organs``, e.g. the bladder) get no
cell number: what they hold is tracer in transit, which differs between animals by their
voiding, not normal uptake that scales with the organ's volume. They are flagged
``reporter_cells_not_estimated_on_excretion_route``.

The detection limit in cells is Currie's k × that uncertainty / u_cell. An estimate below it
is flagged ``below_detection_limit`` and kept. The 95 % interval adds the calibration's
relative SD and is additive, because a difference can be near or below zero. Its low end is
clipped at 0.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from homing.quant.detection import CURRIE_K, Z95
from homing.quant.quantify import flag_list

#: Columns added to reporter-gene rows (NaN elsewhere).
COLUMNS = (
    "live_reporter_cells",
    "live_reporter_cells_low95",
    "live_reporter_cells_high95",
    "min_detectable_live_cells",
    "normal_uptake_percent_id",
    "normal_uptake_source",
    "target_to_background",
)


def calibration_for(calibrations: list[dict], reporter: str, nuclide: str) -> dict | None:
    """The config's calibration of ``reporter`` with a tracer of ``nuclide``, or None."""
    for entry in calibrations:
        if str(entry["reporter"]) == reporter and str(entry["tracer_nuclide"]) == nuclide:
            return entry
    return None


def add_live_cells(table: pd.DataFrame, settings: dict) -> pd.DataFrame:
    """``table`` (organ rows of any scans, controls included) with the reporter columns.

    ``settings``: the config's ``quantification.reporter`` (calibrations, reference_organ,
    normal_uptake_percent_id_per_g, normal_uptake_relative_sd) plus ``currie_k`` and
    ``dose_calibrator_uncertainty``.
    """
    out = table.copy()
    out["flags"] = out["flags"].astype(object)  # all-empty flags read from a TSV are float
    for column in COLUMNS:
        out[column] = "" if column == "normal_uptake_source" else np.nan
    controls = out[out.labelling_method == "none"]
    normal = controls.groupby(["session_id", "organ"]).percent_id_per_g_pvc.agg(["mean", "std"])
    reporter_rows = out.index[out.labelling_method == "reporter_gene"]
    flags = {i: [] for i in reporter_rows}
    for i in reporter_rows:
        row = out.loc[i]
        calibration = calibration_for(
            settings.get("calibrations") or [], str(row.get("label_name", "")), row.tracer_nuclide
        )
        if row.organ in (settings.get("excretion_organs") or []):
            # Tracer in transit (urine, gut contents) is not an organ's normal uptake that
            # scales with its volume: no cell number is made there.
            flags[i].append("reporter_cells_not_estimated_on_excretion_route")
            continue
        base = _normal_uptake(row, normal, settings)
        if calibration is None:
            flags[i].append("no_reporter_calibration")
        if base is None:
            flags[i].append("no_normal_uptake")
        if calibration is None or base is None:
            continue
        for column, value in _live_cells(row, base, calibration, settings).items():
            out.at[i, column] = value
        if out.at[i, "live_reporter_cells"] < out.at[i, "min_detectable_live_cells"]:
            flags[i].append("below_detection_limit")
    out = _target_to_background(out, settings.get("reference_organ", "soft_tissue"))
    for i, extra in flags.items():
        if extra:
            out.at[i, "flags"] = ";".join(flag_list(out.at[i, "flags"]) + extra)
    return out


def _normal_uptake(row, normal: pd.DataFrame, settings: dict) -> dict | None:
    """(%ID/g, SD %ID/g, source) of the organ's normal uptake for this row, or None."""
    key = (row.session_id, row.organ)
    if key in normal.index and normal.loc[key, "mean"] == normal.loc[key, "mean"]:
        mean, sd = float(normal.loc[key, "mean"]), float(normal.loc[key, "std"])
        # One control has no spread, and two or three give an unstable one: never below
        # the configured spread between animals.
        configured_sd = abs(mean) * float(settings["normal_uptake_relative_sd"])
        sd = max(sd, configured_sd) if sd == sd else configured_sd
        return {"mean": mean, "sd": sd, "source": "control cohort, same session"}
    configured = (settings.get("normal_uptake_percent_id_per_g") or {}).get(row.organ)
    if configured is None:
        return None
    mean = float(configured)
    sd = abs(mean) * float(settings["normal_uptake_relative_sd"])
    return {"mean": mean, "sd": sd, "source": "config"}


def _live_cells(row, base: dict, calibration: dict, settings: dict) -> dict:
    """Live cells, their interval and detection limit for one organ row."""
    per_cell = float(calibration["uptake_fraction_of_id_per_1e6_cells"]) / 1e6
    injected = float(row.injected_activity_bq)
    normal_fraction = base["mean"] / 100.0 * row.volume_ml
    excess = row.percent_injected_dose_pvc / 100.0 - normal_fraction
    image_sd = row.detection_limit_bq_at_injection / float(settings["currie_k"]) / injected
    normal_sd = base["sd"] / 100.0 * row.volume_ml
    dose_sd = float(settings["dose_calibrator_uncertainty"]) * abs(excess)
    background_sd = math.sqrt(image_sd**2 + normal_sd**2)
    cells = excess / per_cell
    sd_cells = (
        math.sqrt(background_sd**2 + dose_sd**2) / per_cell
        if background_sd == background_sd
        else math.nan
    )
    sd_cells = math.hypot(sd_cells, cells * float(calibration["relative_sd"]))
    return {
        "live_reporter_cells": cells,
        "live_reporter_cells_low95": max(cells - Z95 * sd_cells, 0.0),
        "live_reporter_cells_high95": max(cells, 0.0) + Z95 * sd_cells,
        "min_detectable_live_cells": float(settings.get("currie_k", CURRIE_K))
        * background_sd
        / per_cell,
        "normal_uptake_percent_id": 100.0 * normal_fraction,
        "normal_uptake_source": base["source"],
    }


def _target_to_background(out: pd.DataFrame, reference_organ: str) -> pd.DataFrame:
    """Each reporter row's %ID/g over its scan's ``reference_organ`` %ID/g (both corrected)."""
    reference = out[out.organ == reference_organ].set_index(["animal_id", "session_id"])
    ref = reference.percent_id_per_g_pvc.reindex(
        pd.MultiIndex.from_frame(out[["animal_id", "session_id"]])
    ).to_numpy()
    ratio = out.percent_id_per_g_pvc.to_numpy() / ref
    reporter = (out.labelling_method == "reporter_gene").to_numpy()
    out["target_to_background"] = np.where(reporter, ratio, np.nan)
    return out
