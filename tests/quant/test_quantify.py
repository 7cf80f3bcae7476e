"""Quantification against digital phantoms whose organ activities are known exactly."""

import math
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from homing import HomingError
from homing.core.nuclides import nuclide_named
from homing.quant.quantify import (
    QuantSettings,
    combine_sessions,
    label_equivalent_cells_per_bq,
    organ_table,
    scan_columns,
    to_injection_factor,
    with_scan_columns,
)

from ..builders import organ_table_from_labels

ZR = nuclide_named("89Zr").half_life_s
F18 = nuclide_named("18F").half_life_s
INJ = datetime(2026, 3, 2, 10, 0, 0)
ORGANS = pd.DataFrame({"label": [0, 1, 2, 3], "name": ["background", "rest", "liver", "tiny"]})


def sidecar(
    scan_start, decay="START", half_life_s=ZR, dose_mbq=0.3, weight_kg=0.025, frame_s=1200.0
):
    corrected = decay != "NONE"
    dc_time = {"START": scan_start, "ADMIN": INJ, "NONE": None}[decay]
    return {
        "HalfLife_s": half_life_s,
        "InjectionDateTime": INJ.isoformat(),
        "ScanStartDateTime": scan_start.isoformat(),
        "ImageDecayCorrected": corrected,
        "DecayCorrectionDateTime": dc_time.isoformat() if dc_time else None,
        "FrameTimesStart": [0.0],
        "FrameDuration": [frame_s],
        "InjectedRadioactivity": dose_mbq,
        "BodyWeight": weight_kg,
        "TracerRadionuclide": "89Zr" if half_life_s == ZR else "18F",
        "TracerName": "test",
    }


def phantom(conc_liver, conc_rest):
    """4×4×4 PET grid: liver in one corner block, a 1-voxel 'tiny' organ, rest elsewhere."""
    labels = np.ones((4, 4, 4), dtype=np.uint8)
    labels[:2, :2, :2] = 2
    labels[3, 3, 3] = 3
    labels[0, 3, 3] = 0
    pet = np.where(labels == 2, conc_liver, conc_rest).astype(np.float32)
    pet[labels == 0] = 0.0
    return pet, labels


def test_start_corrected_image_is_corrected_back_to_injection():
    scan = INJ + timedelta(days=3, hours=0.5)
    pet, labels = phantom(1000.0, 10.0)
    ct_voxel_ml = 0.001  # labels reused as a 1 mm³ "CT" grid
    t = organ_table_from_labels(pet, labels, ct_voxel_ml, sidecar(scan), ORGANS, {}, 1.0)
    liver = t.set_index("organ").loc["liver"]
    expected_inj = 1000.0 * math.exp(math.log(2) * (3 * 86400 + 1800) / ZR)
    assert liver.mean_bq_per_ml_as_stored == pytest.approx(1000.0)
    assert liver.mean_bq_per_ml_at_injection == pytest.approx(expected_inj, rel=1e-9)
    assert liver.volume_ml == pytest.approx(8 * 0.001)
    assert liver.percent_id_per_g == pytest.approx(100 * expected_inj / 0.3e6, rel=1e-9)
    assert liver.percent_injected_dose == pytest.approx(100 * expected_inj * 0.008 / 0.3e6)
    assert liver.suv_bw_g_per_ml == pytest.approx(expected_inj / (0.3e6 / 25.0), rel=1e-9)
    assert "background" not in set(t.organ)


def test_admin_corrected_image_is_not_corrected_twice():
    scan = INJ + timedelta(days=7)
    pet, labels = phantom(500.0, 5.0)
    t = organ_table_from_labels(pet, labels, 0.001, sidecar(scan, "ADMIN"), ORGANS, {}, 1.0)
    assert t.set_index("organ").loc["liver"].mean_bq_per_ml_at_injection == pytest.approx(500.0)


def test_uncorrected_frame_average_is_undone_analytically():
    # A source of C0 Bq/mL at injection, imaged uncorrected over [t1, t1 + Δt]: the image
    # holds the frame average C0·e^(−λt1)·(1 − e^(−λΔt))/(λΔt). We must recover C0.
    c0, t1, dt = 2.0e5, 3600.0, 1800.0
    lam = math.log(2) / F18
    stored = c0 * math.exp(-lam * t1) * (1 - math.exp(-lam * dt)) / (lam * dt)
    sc = sidecar(INJ + timedelta(seconds=t1), "NONE", F18, frame_s=dt)
    assert stored * to_injection_factor(sc) == pytest.approx(c0, rel=1e-12)


def test_density_changes_percent_id_per_g_and_is_recorded():
    scan = INJ + timedelta(hours=2)
    pet, labels = phantom(1000.0, 10.0)
    t1 = organ_table_from_labels(pet, labels, 0.001, sidecar(scan), ORGANS, {}, 1.0)
    t2 = organ_table_from_labels(pet, labels, 0.001, sidecar(scan), ORGANS, {}, 0.4)
    ratio = t2.percent_id_per_g / t1.percent_id_per_g
    assert np.allclose(ratio, 2.5)
    assert set(t2.tissue_density_g_per_ml) == {0.4}


def test_small_organ_and_missing_organ_are_flagged_not_dropped():
    """A 1-voxel organ under a 1.5 mm PSF recovers far less than 0.85 of its activity: it
    is flagged, not dropped (its value is the stated fallback, uncorrected); an organ of
    the label table without any PET voxel is flagged not_on_pet_grid, with NaN means."""
    scan = INJ + timedelta(hours=2)
    pet, labels = phantom(1000.0, 10.0)
    organs = pd.concat([ORGANS, pd.DataFrame({"label": [4], "name": ["absent"]})])
    t = organ_table_from_labels(
        pet, labels, 0.001, sidecar(scan), organs, {}, 1.0, psf_fwhm_mm=1.5
    ).set_index("organ")
    tiny = t.loc["tiny"]
    assert "small_organ_partial_volume" in tiny["flags"]
    assert "pvc_not_recoverable" in tiny["flags"]
    assert tiny.mean_bq_per_ml_at_injection_pvc == tiny.mean_bq_per_ml_at_injection
    assert tiny.pvc_recovery < 0.25
    absent = t.loc["absent"]
    assert "not_on_pet_grid" in absent["flags"] and math.isnan(absent.mean_bq_per_ml_at_injection)
    assert absent.volume_ml == 0.0


def test_grid_mismatch_is_an_error():
    pet, labels = phantom(1.0, 1.0)
    with pytest.raises(HomingError, match="different grids"):
        organ_table_from_labels(pet[:3], labels, 0.001, sidecar(INJ), ORGANS, {}, 1.0)


#: Voxel volumes (mL) of the two grids below: PET 1 mm, CT 0.5 mm (2× finer on each axis).
PET_VOXEL_ML, CT_VOXEL_ML = 0.001, 0.000125


def two_grids():
    """One phantom on a 4×4×4 PET grid, as fractions of each PET voxel taken from its 8
    voxels on the 2× finer CT grid (as registration.fractional makes them).

    On CT the liver is the corner block of 8 PET voxels plus 4 single CT voxels reaching 1/8
    into 4 neighbouring PET voxels: 68 CT voxels, 8.5 µL, where the PET grid's 8 whole liver
    voxels would give 8 µL. 'tiny' is one CT voxel: 1/8 of a PET voxel. Liver PET values
    differ voxel by voxel (1000…1700 Bq/mL); the 4 partly-liver PET voxels read 400, the
    rest 10, the air corner 0.
    """
    on_ct = np.ones((8, 8, 8), dtype=np.uint8)
    on_ct[:4, :4, :4] = 2
    for y, z in [(0, 0), (0, 2), (2, 0), (2, 2)]:
        on_ct[4, y, z] = 2
    on_ct[7, 7, 7] = 3
    on_ct[:4, 4:, 4:] = 0
    blocks = on_ct.reshape(4, 2, 4, 2, 4, 2).transpose(0, 2, 4, 1, 3, 5).reshape(4, 4, 4, 8)
    fractions = np.stack([(blocks == k).mean(axis=3) for k in (1, 2, 3)], axis=-1)
    pet = np.full((4, 4, 4), 10.0, dtype=np.float32)
    pet[:2, :2, :2] = (1000.0 + 100.0 * np.arange(8)).reshape(2, 2, 2)
    pet[2, :2, :2] = 400.0
    pet[(blocks == 0).all(axis=3)] = 0.0
    return pet, fractions.astype(np.float32), on_ct


def test_two_grid_phantom_is_what_it_says():
    pet, fractions, on_ct = two_grids()
    assert [(on_ct == k).sum() for k in range(4)] == [64, 379, 68, 1]
    assert fractions.sum(axis=(0, 1, 2)) * 8 == pytest.approx([379, 68, 1])
    assert (fractions[..., 1] == 1).sum() == 8 and (fractions[..., 1] == 0.125).sum() == 4


def test_volume_and_activity_from_the_fractional_masks():
    """Each PET voxel gives each organ its share: the liver is 8.5 µL (68 CT voxels), not
    the 8 µL of its whole PET voxels, and holds its share of the 4 partly-liver voxels."""
    scan = INJ + timedelta(days=3)
    pet, fractions, _ = two_grids()
    settings = QuantSettings(psf_fwhm_mm=0.0)
    t = organ_table(pet, fractions, [1, 2, 3], [1.0] * 3, sidecar(scan), ORGANS, {}, settings)
    t = t.set_index("organ")
    to_inj = to_injection_factor(sidecar(scan))
    liver = t.loc["liver"]
    liver_bq_stored = (np.sum(1000.0 + 100.0 * np.arange(8)) + 4 * 0.125 * 400.0) * PET_VOXEL_ML
    assert liver.volume_ml == pytest.approx(68 * CT_VOXEL_ML, rel=1e-6)
    assert liver.pet_voxels == 8
    assert liver.mean_bq_per_ml_as_stored == pytest.approx(
        liver_bq_stored / (68 * CT_VOXEL_ML), rel=1e-6
    )
    assert liver.total_activity_bq_at_injection == pytest.approx(liver_bq_stored * to_inj, 1e-6)
    assert liver.max_bq_per_ml_at_injection == pytest.approx(1700.0 * to_inj, rel=1e-6)
    rest = t.loc["rest"]
    assert rest.volume_ml == pytest.approx(379 * CT_VOXEL_ML, rel=1e-6)
    tiny = t.loc["tiny"]
    assert tiny.volume_ml == pytest.approx(CT_VOXEL_ML, rel=1e-6) and tiny.pet_voxels == 0
    assert tiny.mean_bq_per_ml_as_stored == pytest.approx(10.0, rel=1e-6)


def test_peak_is_the_hottest_sphere_mean_in_the_organ():
    """Peak: the highest mean over a ball of the configured radius centred in the organ."""
    pet = np.zeros((9, 9, 9), dtype=np.float32)
    labels = np.ones((9, 9, 9), dtype=np.uint8)
    labels[2:7, 2:7, 2:7] = 2
    pet[labels == 2] = 100.0
    pet[4, 4, 4] = 1000.0  # one hot voxel: a 1 mm ball (7 voxels) around it averages 1900/7
    sc = sidecar(INJ, "ADMIN")
    t = organ_table_from_labels(pet, labels, 0.001, sc, ORGANS, {}, peak_radius_mm=1.0)
    liver = t.set_index("organ").loc["liver"]
    assert liver.max_bq_per_ml_at_injection == pytest.approx(1000.0)
    assert liver.peak_bq_per_ml_at_injection == pytest.approx((1000.0 + 6 * 100.0) / 7)


def test_partial_volume_correction_recovers_a_blurred_phantom():
    """A piecewise-constant phantom blurred by the configured PSF: the corrected means are
    the true ones, the uncorrected small organ reads low, and the flag says so."""
    from scipy import ndimage

    labels = np.ones((24, 24, 24), dtype=np.uint8)
    labels[:, :, :3] = 0
    labels[6:14, 6:14, 6:14] = 2  # liver, 8 mm cube
    labels[17:19, 17:19, 17:19] = 3  # tiny, 2 mm cube
    truth = {0: 0.0, 1: 50.0, 2: 1000.0, 3: 4000.0}
    sharp = np.vectorize(truth.get)(labels).astype(np.float64)
    pet = ndimage.gaussian_filter(sharp, 1.5 / 2.3548, mode="constant").astype(np.float32)
    sc = sidecar(INJ, "ADMIN")
    t = organ_table_from_labels(pet, labels, 0.001, sc, ORGANS, {}, psf_fwhm_mm=1.5)
    t = t.set_index("organ")
    for organ, label in (("rest", 1), ("liver", 2), ("tiny", 3)):
        assert t.loc[organ].mean_bq_per_ml_at_injection_pvc == pytest.approx(truth[label], rel=1e-4)
    assert t.loc["tiny"].mean_bq_per_ml_at_injection < 0.75 * truth[3]
    assert "small_organ_partial_volume" in t.loc["tiny"]["flags"]
    assert t.loc["tiny"].percent_id_per_g_pvc == pytest.approx(100 * 4000.0 / 0.3e6, rel=1e-4)
    assert "pvc_spill_in_dominated" not in ";".join(t["flags"].astype(str))


def test_a_faint_organ_beside_a_bright_one_is_flagged_spill_in_dominated():
    """A faint 2 mm cube touching a bright liver: most of its measured mean is the liver's
    spill-in (recovery > 2), so the corrected value, right on this exact phantom, is flagged
    as resting on that subtraction; the liver is not."""
    from scipy import ndimage

    labels = np.ones((24, 24, 24), dtype=np.uint8)
    labels[:, :, :3] = 0
    labels[6:14, 6:14, 6:14] = 2  # liver, 8 mm cube
    labels[14:16, 9:11, 9:11] = 3  # faint, touching the liver
    truth = {0: 0.0, 1: 50.0, 2: 4000.0, 3: 200.0}
    sharp = np.vectorize(truth.get)(labels).astype(np.float64)
    pet = ndimage.gaussian_filter(sharp, 1.5 / 2.3548, mode="constant").astype(np.float32)
    t = organ_table_from_labels(
        pet, labels, 0.001, sidecar(INJ, "ADMIN"), ORGANS, {}, psf_fwhm_mm=1.5
    ).set_index("organ")
    assert t.loc["tiny"].pvc_recovery > 2.0
    assert t.loc["tiny"].mean_bq_per_ml_at_injection_pvc == pytest.approx(200.0, rel=1e-3)
    assert "pvc_spill_in_dominated" in t.loc["tiny"]["flags"]
    assert "pvc_spill_in_dominated" not in str(t.loc["liver"]["flags"])


def test_organ_density_and_reference_time_columns():
    scan = INJ + timedelta(days=2)
    pet, labels = phantom(1000.0, 10.0)
    organs = pd.DataFrame({"label": [1, 2], "name": ["lungs", "liver"]})
    animal = {"animal_id": "A", "infusion_datetime": (INJ - timedelta(hours=1)).isoformat()}
    t = organ_table_from_labels(
        pet, labels, 0.001, sidecar(scan, "ADMIN"), organs, animal, reference_time="infusion"
    ).set_index("organ")
    lungs = t.loc["lungs"]
    assert lungs.organ_density_g_per_ml == 0.40
    assert lungs.percent_id_per_g_organ_density == pytest.approx(lungs.percent_id_per_g / 0.40)
    assert t.loc["liver"].organ_density_g_per_ml == 1.04
    assert (t.reference_time == "infusion").all()
    assert lungs.reference_datetime == (INJ - timedelta(hours=1)).isoformat()
    # An hour before the injection there was more activity: e^(+λ·3600 s).
    assert lungs.total_activity_bq_at_reference == pytest.approx(
        lungs.total_activity_bq_at_injection * math.exp(math.log(2) * 3600 / ZR), rel=1e-12
    )
    with pytest.raises(HomingError, match="reference_time"):
        organ_table_from_labels(
            pet, labels, 0.001, sidecar(scan), organs, {}, reference_time="yesterday"
        )


def test_quantify_scan_reads_the_fractional_masks_from_their_files(tmp_path):
    """The workflow's quantify step on NIfTI files: the 4-D fractional masks and their
    label table, and the PSF chosen from the config by scanner model."""
    import json

    import nibabel as nib

    from homing.workflow.stages import quantify_scan

    scan = INJ + timedelta(days=3)
    pet, fractions, _ = two_grids()
    files = {"pet": tmp_path / "pet.nii.gz", "probseg": tmp_path / "probseg.nii.gz"}
    nib.save(nib.Nifti1Image(pet, np.eye(4)), files["pet"])
    nib.save(nib.Nifti1Image(fractions, np.eye(4)), files["probseg"])
    pd.DataFrame(
        {"volume": [0, 1, 2], "label": [1, 2, 3], "name": ["rest", "liver", "tiny"]}
    ).to_csv(tmp_path / "probseg.tsv", sep="\t", index=False)
    for name, doc in [
        ("pet_json", sidecar(scan) | {"ManufacturersModelName": "Inveon"}),
        ("regqc", {"metrics": {}, "flags": []}),
        ("pet_to_ct", {"method": "identity"}),
    ]:
        files[name] = tmp_path / f"{name}.json"
        files[name].write_text(json.dumps(doc))
    ORGANS.to_csv(tmp_path / "labels.tsv", sep="\t", index=False)
    out = tmp_path / "organs.tsv"
    quantification = {
        "reference_time": "injection",
        "tissue_density_g_per_ml": 1.0,
        "peak_sphere_radius_mm": 1.0,
        "detection": {
            "currie_k": 4.65,
            "dose_calibrator_uncertainty": 0.05,
            "labelling_uncertainty": 0.1,
        },
        "partial_volume": {
            "psf_fwhm_mm": {"default": 1.4, "Inveon": 0.0},
            "recovery_flag_below": 0.85,
            "spill_in_flag_above": 2.0,
            "min_recovery": 0.25,
            "max_condition": 1000,
        },
    }
    checks = {
        "infusion_time_tolerance_min": 30.0,
        "dose_tolerance_fraction": 0.1,
        "weight_tolerance_fraction": 0.1,
    }
    quantify_scan(
        pet_nii=files["pet"], pet_json=files["pet_json"], probseg_nii=files["probseg"],
        probseg_tsv=tmp_path / "probseg.tsv", label_tsv=tmp_path / "labels.tsv",
        regqc_json=files["regqc"], pet_to_ct_json=files["pet_to_ct"],
        animal={"cohort": "a", "labelling_method": "none"},
        scan={"animal_id": "A1", "session_id": "d3", "modality": "PET"},
        quantification=quantification, checks=checks, where="two-grid phantom", out_tsv=out,
    )  # fmt: skip
    liver = pd.read_csv(out, sep="\t").set_index("organ").loc["liver"]
    assert liver.volume_ml == pytest.approx(68 * CT_VOXEL_ML, rel=1e-5)
    assert liver.pet_voxels == 8
    # The Inveon's PSF (0 here) was used, not the default 1.4 mm.
    for psf_mm, same in ((0.0, True), (1.4, False)):
        direct = organ_table(
            pet, fractions, [1, 2, 3], [1.0] * 3, sidecar(scan), ORGANS, {},
            QuantSettings(psf_fwhm_mm=psf_mm),
        ).set_index("organ").loc["liver"]  # fmt: skip
        close = direct.mean_bq_per_ml_at_injection_pvc == pytest.approx(
            liver.mean_bq_per_ml_at_injection_pvc,
            rel=1e-5,  # the TSV keeps 6 digits
        )
        assert close == same


def test_label_equivalent_cells_from_specific_activity():
    animal = {
        "labelling_method": "ex_vivo",
        "label_nuclide": "89Zr",
        "labelling_specific_activity_kbq_per_1e6_cells": 30.0,
        "labelling_datetime": (INJ - timedelta(hours=1.5)).isoformat(),
    }
    per_bq = label_equivalent_cells_per_bq(animal, INJ, "89Zr")
    a_cell = 30.0e3 / 1e6 * math.exp(-math.log(2) * 5400 / ZR)  # Bq per cell at infusion
    assert per_bq == pytest.approx(1 / a_cell, rel=1e-12)
    # 1e6 cells' worth of label in the liver, imaged 3 days later (START-corrected)
    scan = INJ + timedelta(days=3)
    total_at_inj = 1e6 * a_cell
    conc_scan = total_at_inj / 0.008 * math.exp(-math.log(2) * 3 * 86400 / ZR)
    pet, labels = phantom(conc_scan, 0.0)
    t = organ_table_from_labels(pet, labels, 0.001, sidecar(scan), ORGANS, animal, 1.0)
    assert t.set_index("organ").loc["liver"].label_equivalent_cells == pytest.approx(1e6)
    # a reporter scan (18F) of the same animal is not a measurement of the label
    assert math.isnan(label_equivalent_cells_per_bq(animal, INJ, "18F"))
    assert math.isnan(label_equivalent_cells_per_bq({"labelling_method": "none"}, INJ, "89Zr"))


def test_scan_columns_and_combination_order():
    sc = sidecar(INJ + timedelta(days=3))
    animal = {"cohort": "a", "labelling_method": "ex_vivo", "infusion_datetime": INJ.isoformat()}
    cols = scan_columns(sc, animal, {"animal_id": "A1", "session_id": "d3", "modality": "PET"})
    assert cols["days_since_infusion"] == pytest.approx(3.0)
    assert cols["hours_since_injection"] == pytest.approx(72.0)
    assert cols["body_weight_g"] == pytest.approx(25.0)
    pet, labels = phantom(1.0, 1.0)
    t = organ_table_from_labels(pet, labels, 0.001, sc, ORGANS, animal, 1.0)
    late = with_scan_columns(t, cols)
    early = with_scan_columns(
        t, {**cols, "session_id": "d0", "scan_start_datetime": INJ.isoformat()}
    )
    both = combine_sessions([late, early])
    assert list(both.session_id.unique()) == ["d0", "d3"]
    with pytest.raises(HomingError):
        combine_sessions([])


def test_registration_qc_flags_and_metrics_travel_with_every_row():
    import pandas as pd

    from homing.quant.quantify import with_registration_qc

    table = pd.DataFrame(
        {"organ": ["liver", "spleen"], "flags": ["", "small_organ_partial_volume"]}
    )
    regqc = {
        "metrics": {"body_dice": 0.91, "skeleton_dice": 0.3, "jacobian_min": 0.5},
        "flags": ["regqc_body_dice_low", "regqc_skeleton_dice_low"],
    }
    pet = {"method": "rigid (mutual information)", "identity_rejected": True}
    out = with_registration_qc(table, regqc, pet)
    assert list(out["flags"]) == [
        "regqc_body_dice_low;regqc_skeleton_dice_low;pet_ct_misaligned_despite_shared_frame",
        "small_organ_partial_volume;regqc_body_dice_low;regqc_skeleton_dice_low;"
        "pet_ct_misaligned_despite_shared_frame",
    ]
    assert (out.registration_body_dice == 0.91).all()
    assert out.registration_jacobian_max.isna().all()  # not measured: empty, not invented
    assert (out.pet_to_ct_method == "rigid (mutual information)").all()
    passed = with_registration_qc(table, {"metrics": {}, "flags": []}, {"method": "identity"})
    assert list(passed["flags"]) == list(table["flags"])
