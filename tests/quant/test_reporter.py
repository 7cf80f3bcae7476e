"""Reporter-gene live cells from organ tables whose activities are known exactly."""

import math

import numpy as np
import pandas as pd
import pytest

from homing.quant import reporter

CALIBRATION = {
    "reporter": "NIS",
    "tracer_nuclide": "18F",
    "uptake_fraction_of_id_per_1e6_cells": 0.002,
    "relative_sd": 0.1,
}
SETTINGS = {
    "calibrations": [CALIBRATION],
    "normal_uptake_percent_id_per_g": {},
    "normal_uptake_relative_sd": 0.15,
    "reference_organ": "soft_tissue",
    "excretion_organs": ["bladder"],
    "currie_k": 4.65,
    "dose_calibrator_uncertainty": 0.05,
}
ID_BQ = 10e6


def _rows(animal, method, session, spleen_pid, liver_pid, volume=(0.1, 1.0)):
    """Organ rows of one scan: %ID and %ID/g (per mL) of spleen, liver and soft tissue."""
    organs = ["spleen", "liver", "soft_tissue"]
    pid = [spleen_pid, liver_pid, 10.0]
    vol = [volume[0], volume[1], 20.0]
    return pd.DataFrame(
        {
            "animal_id": animal,
            "session_id": session,
            "labelling_method": method,
            "label_name": "NIS" if method == "reporter_gene" else "",
            "tracer_nuclide": "18F",
            "organ": organs,
            "volume_ml": vol,
            "injected_activity_bq": ID_BQ,
            "percent_injected_dose_pvc": pid,
            "percent_id_per_g_pvc": [p / v for p, v in zip(pid, vol, strict=True)],
            "detection_limit_bq_at_injection": [4.65 * 1e3] * 3,  # image SD 1 kBq per organ
            "flags": np.nan,
        }
    )


def test_live_cells_are_the_excess_over_the_control_per_cell():
    """Control spleen 0.1 %ID in 0.1 mL (1 %ID/g); reporter spleen (same volume) 2.1 %ID:
    2 %ID above normal at 0.002 of the dose per 10⁶ cells is 10⁷ cells."""
    table = pd.concat(
        [_rows("CO1", "none", "d4", 0.1, 1.5), _rows("RE1", "reporter_gene", "d4", 2.1, 1.5)]
    )
    out = reporter.add_live_cells(table.reset_index(drop=True), SETTINGS)
    spleen = out[(out.animal_id == "RE1") & (out.organ == "spleen")].iloc[0]
    assert spleen.live_reporter_cells == pytest.approx(1e7, rel=1e-9)
    assert spleen.normal_uptake_percent_id == pytest.approx(0.1)
    assert spleen.normal_uptake_source == "control cohort, same session"
    assert spleen.target_to_background == pytest.approx(21.0 / (10.0 / 20.0))
    # The interval holds the calibration's 10 % at least, and the detection limit is
    # k × (image and normal-uptake SD) per cell: far below 10⁷ here.
    assert spleen.live_reporter_cells_low95 < 1e7 * (1 - 1.96 * 0.1) + 1
    assert spleen.live_reporter_cells_high95 > 1e7 * (1 + 1.96 * 0.1) - 1
    normal_sd = 0.15 * 0.1 / 100  # 15 % of 0.1 %ID, as a fraction of the dose
    image_sd = 1e3 / ID_BQ
    expected_ld = 4.65 * math.hypot(normal_sd, image_sd) / (0.002 / 1e6)
    assert spleen.min_detectable_live_cells == pytest.approx(expected_ld, rel=1e-9)
    assert "below_detection_limit" not in str(spleen["flags"])
    # The liver's excess is zero: below the detection limit, flagged, kept.
    liver = out[(out.animal_id == "RE1") & (out.organ == "liver")].iloc[0]
    assert liver.live_reporter_cells == pytest.approx(0.0, abs=1e-3)
    assert "below_detection_limit" in liver["flags"] and liver.live_reporter_cells_low95 == 0.0
    # Control and other rows get no cells.
    assert out[out.animal_id == "CO1"].live_reporter_cells.isna().all()


def test_without_calibration_or_control_the_rows_are_flagged_not_guessed():
    table = _rows("RE1", "reporter_gene", "d4", 2.1, 1.5)
    out = reporter.add_live_cells(table, SETTINGS | {"calibrations": []})
    assert out.live_reporter_cells.isna().all()
    assert out["flags"].str.contains("no_reporter_calibration").all()
    assert out["flags"].str.contains("no_normal_uptake").all()
    configured = SETTINGS | {"normal_uptake_percent_id_per_g": {"spleen": 1.0}}
    out = reporter.add_live_cells(table, configured)
    spleen = out[out.organ == "spleen"].iloc[0]
    assert spleen.live_reporter_cells == pytest.approx(1e7, rel=1e-9)
    assert spleen.normal_uptake_source == "config"
    assert out[out.organ == "liver"]["flags"].str.contains("no_normal_uptake").all()


def test_two_controls_give_their_own_spread():
    table = pd.concat(
        [
            _rows("CO1", "none", "d4", 0.08, 1.5),
            _rows("CO2", "none", "d4", 0.12, 1.5),
            _rows("RE1", "reporter_gene", "d4", 2.1, 1.5),
        ]
    ).reset_index(drop=True)
    out = reporter.add_live_cells(table, SETTINGS)
    spleen = out[(out.animal_id == "RE1") & (out.organ == "spleen")].iloc[0]
    normal_sd = np.std([0.8, 1.2], ddof=1) / 100 * 0.1
    expected_ld = 4.65 * math.hypot(normal_sd, 1e3 / ID_BQ) / (0.002 / 1e6)
    assert spleen.min_detectable_live_cells == pytest.approx(expected_ld, rel=1e-9)


def test_no_cells_on_the_excretion_route_and_a_floor_under_the_controls_spread():
    table = pd.concat(
        [
            _rows("CO1", "none", "d4", 0.100, 1.5),
            _rows("CO2", "none", "d4", 0.101, 1.5),  # two nearly equal controls
            _rows("RE1", "reporter_gene", "d4", 2.1, 1.5),
        ]
    ).reset_index(drop=True)
    table.loc[table.organ == "liver", "organ"] = "bladder"
    out = reporter.add_live_cells(table, SETTINGS)
    bladder = out[(out.animal_id == "RE1") & (out.organ == "bladder")].iloc[0]
    assert math.isnan(bladder.live_reporter_cells)
    assert "reporter_cells_not_estimated_on_excretion_route" in bladder["flags"]
    spleen = out[(out.animal_id == "RE1") & (out.organ == "spleen")].iloc[0]
    floor_sd = 0.15 * np.mean([1.0, 1.01]) / 100 * 0.1  # the configured 15 %, not ~0.7 %
    expected_ld = 4.65 * math.hypot(floor_sd, 1e3 / ID_BQ) / (0.002 / 1e6)
    assert spleen.min_detectable_live_cells == pytest.approx(expected_ld, rel=1e-9)
