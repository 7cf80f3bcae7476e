"""Study figures: each is drawn, readable (units, detection limit, controls on their own
axis), and shows the numbers of the table it is given."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib.pyplot as plt
import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from homing import HomingError
from homing.report import method_figures as mf
from homing.report import mip_timeline as mip
from homing.report import study_figures as sf

REAL_RESULTS = Path("/tmp/lead/s5/hardrun/results")
ORGANS = ["liver", "spleen", "skeleton"]
#: An axis label carries its unit in brackets at its end, e.g. "(Bq/mL)".
UNITS = re.compile(r"\([^()]+\)$")


def _study() -> pd.DataFrame:
    """2 cohorts × 3 animals × 3 sessions + 1 control; the reporter cohort's live cells are
    exactly 2 × the ex vivo cohort's label-equivalent cells of the same animal number, at
    days within ±1 day of them."""
    rows = []
    design = [
        ("exvivo-low", "ex_vivo", "89Zr", "X", [1.0, 3.0, 7.0]),
        ("nis-low", "reporter_gene", "18F", "R", [1.4, 3.6, 7.9]),
        ("control", "none", "18F", "C", [np.nan, np.nan, np.nan]),
    ]
    nan = np.nan
    for cohort, method, nuclide, letter, days in design:
        n_animals = 1 if method == "none" else 3
        for a in range(1, n_animals + 1):
            for s, day in enumerate(days):
                for k, organ in enumerate(ORGANS):
                    cells = 1000.0 * (k + 1) * a * (s + 1)
                    ex = method == "ex_vivo"
                    rep = method == "reporter_gene"
                    rows.append(
                        {
                            "animal_id": f"L{letter}0{a}",
                            "session_id": f"s{s}",
                            "cohort": cohort,
                            "labelling_method": method,
                            "tracer_nuclide": nuclide,
                            "hours_since_injection": 1.0 + 0.5 * s,
                            "days_since_infusion": day,
                            "organ": organ,
                            "percent_id_per_g": 2.0 + k + 0.1 * a + s,
                            "percent_id_per_g_pvc": 3.0 + k + 0.1 * a + s,
                            "label_equivalent_cells_pvc": cells if ex else nan,
                            "label_equivalent_cells_pvc_low95": 0.8 * cells if ex else nan,
                            "label_equivalent_cells_pvc_high95": 1.25 * cells if ex else nan,
                            "min_detectable_cells": 500.0 if ex else nan,
                            "live_reporter_cells": 2 * cells if rep else nan,
                            "live_reporter_cells_low95": 1.6 * cells if rep else nan,
                            "live_reporter_cells_high95": 2.5 * cells if rep else nan,
                            "min_detectable_live_cells": 800.0 if rep else nan,
                            "percent_injected_dose_pvc": 1.0 + 2.0 * s if ex else 1.0,
                            "whole_body_retention_fraction": 1.0 - 0.01 * s if ex else nan,
                            "flags": "",
                        }
                    )
    return pd.DataFrame(rows)


def _units_everywhere(fig) -> None:
    """Every axis that shows data names its unit on both axes."""
    for ax in fig.axes:
        if not ax.has_data() or not ax.axison:
            continue
        for label in (ax.get_xlabel(), ax.get_ylabel()):
            assert UNITS.search(label), f"no unit in axis label {label!r} of {ax.get_title()!r}"


def _non_trivial_png(path: Path) -> None:
    assert path.stat().st_size > 10_000
    img = plt.imread(path)
    assert img.std() > 0.01, "the PNG is uniform"


def test_time_courses_percent_id_per_g_puts_controls_on_their_own_hours_axis(tmp_path):
    fig, caption = sf.build_organ_time_courses(_study(), "percent_id_per_g_pvc", ORGANS)
    _units_everywhere(fig)
    controls = [ax for ax in fig.axes if "controls" in ax.get_title()]
    assert len(controls) == len(ORGANS)
    for ax in controls:
        xs = np.concatenate([line.get_xdata() for line in ax.get_lines()]).astype(float)
        assert xs.size and np.isfinite(xs).all()
        assert set(xs) <= {1.0, 1.5, 2.0}
        assert ax.get_xlabel() == sf.HOURS_LABEL
    infused = [ax for ax in fig.axes if "cell-infused" in ax.get_title()]
    assert all(ax.get_xlabel() == sf.DAYS_LABEL for ax in infused)
    assert fig._suptitle.get_text()
    plt.close(fig)
    out = tmp_path / "pct.png"
    assert sf.organ_time_courses(_study(), "percent_id_per_g_pvc", ORGANS, out) == caption
    _non_trivial_png(out)


def test_time_courses_of_cells_shade_each_methods_detection_limit(tmp_path):
    fig, caption = sf.build_organ_time_courses(_study(), "cells", ORGANS)
    _units_everywhere(fig)
    assert len(fig.axes) == 2 * len(ORGANS) and "below detection limit" in caption
    limits = set()
    for ax in fig.axes:
        bands = [p for p in ax.patches if p.get_gid() == "detection-limit"]
        assert len(bands) == 1 and bands[0].get_label() == sf.LOD_LABEL
        limits.add(ax.get_title().split("\n")[1])
        assert "controls" not in ax.get_title()  # controls have no cells
    assert limits == {f"{sf.LOD_LABEL}: < 500 cells", f"{sf.LOD_LABEL}: < 800 cells"}
    plt.close(fig)
    out = tmp_path / "cells.png"
    sf.organ_time_courses(_study(), "cells", ORGANS, out)
    _non_trivial_png(out)


def test_cohort_mean_and_sd_are_those_of_the_animals():
    fig, _ = sf.build_organ_time_courses(_study(), "percent_id_per_g_pvc", ["liver"])
    ax = next(a for a in fig.axes if "cell-infused" in a.get_title())
    (bars,) = [c for c in ax.containers if c.get_label().startswith("exvivo-low mean ± SD")]
    mean_line = bars.lines[0]
    # exvivo-low liver: 3 + 0.1 a + s over animals a = 1..3 → mean 3.2 + s.
    np.testing.assert_allclose(np.asarray(mean_line.get_ydata(), float), [3.2, 4.2, 5.2])
    np.testing.assert_allclose(np.asarray(mean_line.get_xdata(), float), [1.0, 3.0, 7.0])
    plt.close(fig)


def test_cohorts_differ_by_colour_marker_and_line_style():
    styles = sf.cohort_styles(_study())
    assert list(styles) == ["exvivo-low", "nis-low", "control"]
    for key in ("color", "marker", "linestyle"):
        assert len({str(s[key]) for s in styles.values()}) == 3
    assert all(s["color"] in sf.OKABE_ITO for s in styles.values())


def test_method_comparison_ratio_row_holds_reporter_over_exvivo(tmp_path):
    fig, caption = mf.build_method_comparison(_study(), ORGANS)
    _units_everywhere(fig)
    ratio_axes = fig.axes[len(ORGANS) : 2 * len(ORGANS)]
    for ax in ratio_axes:
        (line,) = [line for line in ax.get_lines() if line.get_gid() == "ratio"]
        np.testing.assert_allclose(line.get_ydata(), [2.0, 2.0, 2.0])
        np.testing.assert_allclose(line.get_xdata(), [1.2, 3.3, 7.45])
    assert "±1 day" in caption and "nearest day" in caption
    assert "9 ratios drawn, 0 of them" in caption
    # The cells row shares one log axis for both methods.
    top = fig.axes[0]
    assert top.get_yscale() == "log" and len(top.containers) == 2
    plt.close(fig)
    out = tmp_path / "methods.png"
    mf.method_comparison(_study(), ORGANS, out)
    _non_trivial_png(out)


def test_ratio_of_a_mean_below_detection_limit_is_an_open_marker():
    study = _study()
    study["min_detectable_live_cells"] = np.where(study.organ == "liver", 1e9, 1.0)
    fig, caption = mf.build_method_comparison(study, ["liver", "spleen"])
    liver, spleen = fig.axes[2:]
    (open_marks,) = [line for line in liver.get_lines() if "below" in str(line.get_gid())]
    assert len(open_marks.get_xdata()) == 3 and open_marks.get_markerfacecolor() == "white"
    assert not [line for line in spleen.get_lines() if "below" in str(line.get_gid())]
    assert "6 ratios drawn, 3 of them (open markers)" in caption
    plt.close(fig)


def test_organ_without_a_ratio_says_why():
    study = _study()
    reporter = study.labelling_method == "reporter_gene"
    study.loc[reporter & (study.organ == "liver"), "live_reporter_cells"] = -5.0
    fig, _ = mf.build_method_comparison(study, ["liver"])
    (ratio_ax,) = fig.axes[1:]
    assert not [line for line in ratio_ax.get_lines() if line.get_gid() == "ratio"]
    assert any(t.get_text().startswith("no ratio") for t in ratio_ax.texts)
    plt.close(fig)


def test_days_further_apart_than_one_day_are_not_matched():
    assert mf.match_days([1.0, 3.0, 10.0], [0.2, 2.5, 3.1, 8.5]) == [(0, 0), (1, 2)]
    # Each ex vivo session once: the closer reporter session takes it.
    assert mf.match_days([2.0, 2.9], [2.8]) == [(1, 0)]


def test_non_positive_cells_are_marked_not_dropped():
    study = _study()
    study.loc[study.labelling_method == "reporter_gene", "live_reporter_cells"] *= -1
    fig, caption = mf.build_method_comparison(study, ["liver"])
    floor = [line for line in fig.axes[0].get_lines() if line.get_marker() == "v"]
    assert len(floor) == 1 and len(floor[0].get_xdata()) == 3
    assert "3 matched pairs had a mean ≤ 0" in caption
    plt.close(fig)


def test_free_label_and_retention(tmp_path):
    fig, caption = mf.build_free_label_and_retention(_study())
    _units_everywhere(fig)
    bone, retention = fig.axes
    assert len(bone.get_lines()) == 3 and len(retention.get_lines()) == 3
    np.testing.assert_allclose(bone.get_lines()[0].get_ydata(), [1.0, 3.0, 5.0])
    np.testing.assert_allclose(retention.get_lines()[0].get_ydata(), [1.0, 0.99, 0.98])
    assert {t.get_text() for t in bone.texts} == {"sub-LX01", "sub-LX02", "sub-LX03"}
    assert "89Zr" in caption
    plt.close(fig)
    out = tmp_path / "bone.png"
    mf.free_label_and_retention(_study(), out)
    _non_trivial_png(out)


def test_infused_animal_without_days_is_an_error():
    study = _study()
    study.loc[study.animal_id == "LX02", "days_since_infusion"] = np.nan
    with pytest.raises(HomingError, match="LX02"):
        sf.build_organ_time_courses(study, "percent_id_per_g_pvc", ORGANS)


def test_unknown_tracer_has_no_default_colour_map():
    assert sf.tracer_cmap("89Zr") != sf.tracer_cmap("18F")
    with pytest.raises(HomingError, match="99Tc"):
        sf.tracer_cmap("99Tc")


# ----------------------------------------------------------------------------- images


def _scan(tmp_path: Path, session: str, scale: float, nuclide: str = "89Zr") -> dict:
    """A tiny PET (1 mm, 14×10×18, Bq/mL) with a hot 'organ', its label map, and a CT on a
    finer (0.5 mm) grid shifted by half a PET voxel, in one scanner frame."""
    pet_aff = np.diag([1.0, 1.0, 1.0, 1.0])
    pet_aff[:3, 3] = [-7.0, -5.0, -9.0]
    lab = np.zeros((14, 10, 18), np.uint8)
    lab[2:12, 2:8, 2:16] = 1
    lab[4:8, 3:7, 9:13] = 2
    pet = np.where(lab == 2, 5000.0 * scale, np.where(lab == 1, 500.0 * scale, 0.0))
    ct_aff = np.diag([0.5, 0.5, 0.5, 1.0])
    ct_aff[:3, 3] = [-7.5, -5.5, -9.5]
    ii, jj, kk = np.indices((30, 22, 38))
    ct = np.where((ii > 5) & (ii < 25) & (jj > 5) & (jj < 17), 40.0, -1000.0)
    ct[(ii > 13) & (ii < 16) & (jj > 9) & (jj < 12)] = 1200.0  # a 'spine'
    ct += kk  # not constant along the slab axis: the slab seams are tested
    d = tmp_path / f"ses-{session}"
    d.mkdir()
    paths = {}
    for name, data, aff in (
        ("pet", pet.astype(np.float32), pet_aff),
        ("dseg", lab, pet_aff),
        ("ct", ct.astype(np.int16), ct_aff),
    ):
        paths[name] = d / f"sub-LX01_ses-{session}_{name}.nii.gz"
        nib.save(nib.Nifti1Image(data, aff), paths[name])
    return {
        "session_id": session,
        "days_label": f"day {session[1:]}",
        "tracer_nuclide": nuclide,
        **paths,
    }


def test_ct_on_pet_grid_matches_nibabel_resampling_across_slabs(tmp_path, monkeypatch):
    from nibabel.processing import resample_from_to
    from scipy import ndimage

    scan = _scan(tmp_path, "d0", 1.0)
    pet, ct = nib.load(scan["pet"]), nib.load(scan["ct"])
    monkeypatch.setattr(mip, "_CT_SLAB_VOXELS", 30 * 22 * 5)  # 8 slabs of 5 planes
    plain = mip.ct_on_pet_grid(scan["ct"], pet, antialias=False)
    ref = resample_from_to(ct, pet, order=1, cval=mip.AIR_HU).get_fdata()
    assert plain.shape == pet.shape and plain.dtype == np.float32
    np.testing.assert_allclose(plain, ref, atol=1e-3)
    # Anti-aliased: a 3-voxel box (2 CT voxels per PET voxel, made odd) on the whole CT.
    smooth = mip.ct_on_pet_grid(scan["ct"], pet)
    boxed = nib.Nifti1Image(
        ndimage.uniform_filter(ct.get_fdata(dtype=np.float32), size=3, mode="nearest"), ct.affine
    )
    ref = resample_from_to(boxed, pet, order=1, cval=mip.AIR_HU).get_fdata()
    np.testing.assert_allclose(smooth, ref, atol=1e-2)
    assert not np.allclose(smooth, plain)


def test_mip_timeline(tmp_path):
    scans = [_scan(tmp_path, s, f) for s, f in (("d0", 1.0), ("d2", 0.5), ("d7", 0.25))]
    fig, caption = mip.build_mip_timeline(scans)
    panels = [ax for ax in fig.axes if ax.images]
    assert len(panels) == 3
    assert all(ax.get_title().startswith("sub-LX01 ses-") for ax in panels)
    # One fixed PET scale (Bq/mL) across the sessions, the tracer's colour map.
    pets = [ax.images[1] for ax in panels]
    for im in pets:
        assert im.get_clim() == (0.0, pytest.approx(5000.0))
    assert {im.get_cmap().name for im in pets} == {"inferno"}
    # The day-7 MIP shows a quarter of the day-0 activity on that one scale.
    assert pets[2].get_array().max() == pytest.approx(1250.0)
    # Organ outlines are drawn, and the CT's 'spine' shows in the grey projection.
    assert all(len(ax.collections) >= 2 for ax in panels)
    assert panels[0].images[0].get_array().max() > 400  # soft tissue is 40 HU
    colourbar = [ax for ax in fig.axes if not ax.images and "Bq/mL" in ax.get_ylabel()]
    assert len(colourbar) == 1
    assert fig._suptitle.get_text() and "Bq/mL" in caption
    plt.close(fig)
    out = tmp_path / "mip.png"
    mip.mip_timeline(scans, out)
    _non_trivial_png(out)


# ----------------------------------------------------------------------------- real study


def test_every_figure_on_the_real_study(tmp_path):
    """The hard-design run's study table (3 cohorts) and LX01's images."""
    table = REAL_RESULTS / "study_organs.tsv"
    if not table.exists():
        pytest.skip(f"no real study table at {table} (made by the lead's hard-design run)")
    study = sf.read_study(table)
    organs = ["spleen", "liver", "lungs", "skeleton"]
    for metric in ("percent_id_per_g_pvc", "cells"):
        out = tmp_path / f"{metric}.png"
        assert sf.organ_time_courses(study, metric, organs, out)
        _non_trivial_png(out)
    for name, draw in (
        ("methods", lambda out: mf.method_comparison(study, organs, out)),
        ("bone", lambda out: mf.free_label_and_retention(study, out)),
    ):
        assert draw(tmp_path / f"{name}.png")
        _non_trivial_png(tmp_path / f"{name}.png")
    scans = []
    for ses in ("d0", "d9"):
        d = REAL_RESULTS / "sub-LX01" / f"ses-{ses}"
        scans.append(
            {
                "session_id": ses,
                "days_label": f"day {ses[1:]}",
                "pet": d / "pet" / f"sub-LX01_ses-{ses}_pet.nii.gz",
                "ct": d / "anat" / f"sub-LX01_ses-{ses}_ct.nii.gz",
                "dseg": d / "pet" / f"sub-LX01_ses-{ses}_space-pet_dseg.nii.gz",
                "pet_to_ct": d / "xfm" / f"sub-LX01_ses-{ses}_from-pet_to-ct_xfm.mat",
                "tracer_nuclide": "89Zr",
                "outline_labels": [1] + list(range(3, 22)),  # not the skeleton (2)
            }
        )
    assert mip.mip_timeline(scans, tmp_path / "mip.png")
    _non_trivial_png(tmp_path / "mip.png")
