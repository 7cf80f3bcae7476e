"""Tests for homing.sim.kinetics against closed-form solutions of small compartment models."""

from __future__ import annotations

import math

import numpy as np
import pytest

from homing import HomingError
from homing.sim.kinetics import CellModel, LabelFate, from_design, solve, tracer_distribution

TIMES = [0.0, 0.5, 3.0, 24.0, 170.0]
TOL = dict(rel=1e-9, abs=1e-12)


# --------------------------------------------------------------------------- death, division


def test_death_only_single_compartment():
    d = 0.02
    model = CellModel(initial_fraction={"lungs": 1.0}, death_per_h=d)
    fate = LabelFate(dead_cell_label_to={"liver": 0.6}, free_label_to={"skeleton": 1.0})
    states = solve(model, fate, TIMES)
    assert len(states) == len(TIMES)
    for t, s in zip(TIMES, states, strict=True):
        survive = math.exp(-d * t)
        assert s.live_cells["lungs"] == pytest.approx(survive, **TOL)
        assert s.cell_label["lungs"] == pytest.approx(survive, **TOL)
        assert s.deposited_label["liver"] == pytest.approx(0.6 * (1 - survive), **TOL)
        assert s.deposited_label["skeleton"] == pytest.approx(0.4 * (1 - survive), **TOL)
        # liver is a deposit here, not a cell compartment
        assert set(s.live_cells) == {"lungs"}
        assert set(s.deposited_label) == {"liver", "skeleton"}


def test_state_at_time_zero_is_the_initial_state():
    model = CellModel(
        initial_fraction={"lungs": 0.7, "blood": 0.3},
        transfer_per_h={"lungs": {"liver": 0.1}},
        death_per_h=0.05,
    )
    (s,) = solve(model, LabelFate(free_label_to={"excreted": 1.0}), [0.0])
    assert s.live_cells == pytest.approx({"blood": 0.3, "liver": 0.0, "lungs": 0.7})
    assert s.cell_label == pytest.approx({"blood": 0.3, "liver": 0.0, "lungs": 0.7})
    assert s.deposited_label == pytest.approx({"excreted": 0.0})


def test_proliferation_dilutes_label_per_cell_but_not_organ_total():
    g, d = 0.03, 0.01
    model = CellModel(
        initial_fraction={"spleen": 1.0}, death_per_h=d, proliferation_per_h={"spleen": g}
    )
    fate = LabelFate(free_label_to={"excreted": 1.0})
    for t, s in zip(TIMES, solve(model, fate, TIMES), strict=True):
        assert s.live_cells["spleen"] == pytest.approx(math.exp((g - d) * t), **TOL)
        assert s.cell_label["spleen"] == pytest.approx(math.exp(-d * t), **TOL)
        assert s.deposited_label["excreted"] == pytest.approx(1 - math.exp(-d * t), **TOL)
    # cells grow in number while the label inside them only falls
    last = solve(model, fate, [100.0])[0]
    assert last.live_cells["spleen"] > 1.0 > last.cell_label["spleen"]


def test_proliferation_after_transfer():
    # A -> B at k, B divides at g, no death:
    # A = e^-kt, B = k/(k+g) (e^gt - e^-kt); label: B = 1 - e^-kt.
    k, g = 0.2, 0.05
    model = CellModel(
        initial_fraction={"blood": 1.0},
        transfer_per_h={"blood": {"spleen": k}},
        proliferation_per_h={"spleen": g},
    )
    for t, s in zip(TIMES, solve(model, None, TIMES), strict=True):
        assert s.live_cells["blood"] == pytest.approx(math.exp(-k * t), **TOL)
        expect_b = k / (k + g) * (math.exp(g * t) - math.exp(-k * t))
        assert s.live_cells["spleen"] == pytest.approx(expect_b, **TOL)
        assert s.cell_label["spleen"] == pytest.approx(1 - math.exp(-k * t), **TOL)
        # nothing dies and nothing is released: no label is deposited anywhere
        assert sum(s.deposited_label.values()) == pytest.approx(0.0, abs=1e-12)


# --------------------------------------------------------------------------- transfer


def test_transfer_a_to_b():
    k = 0.3
    model = CellModel(initial_fraction={"lungs": 1.0}, transfer_per_h={"lungs": {"liver": k}})
    for t, s in zip(TIMES, solve(model, None, TIMES), strict=True):
        for kind in (s.live_cells, s.cell_label):
            assert kind["lungs"] == pytest.approx(math.exp(-k * t), **TOL)
            assert kind["liver"] == pytest.approx(1 - math.exp(-k * t), **TOL)


def test_chain_matches_bateman():
    k1, k2 = 0.4, 0.07
    model = CellModel(
        initial_fraction={"lungs": 1.0},
        transfer_per_h={"lungs": {"blood": k1}, "blood": {"spleen": k2}},
    )
    for t, s in zip(TIMES, solve(model, None, TIMES), strict=True):
        a = math.exp(-k1 * t)
        b = k1 / (k2 - k1) * (math.exp(-k1 * t) - math.exp(-k2 * t))
        c = 1 + (k1 * math.exp(-k2 * t) - k2 * math.exp(-k1 * t)) / (k2 - k1)
        for kind in (s.live_cells, s.cell_label):
            assert kind["lungs"] == pytest.approx(a, **TOL)
            assert kind["blood"] == pytest.approx(b, **TOL)
            assert kind["spleen"] == pytest.approx(c, **TOL)


def test_transfer_with_death_in_both_compartments():
    # A -> B at k, death d everywhere: A = e^-(k+d)t, B = e^-dt (1 - e^-kt)
    k, d = 0.1, 0.02
    model = CellModel(
        initial_fraction={"lungs": 1.0}, transfer_per_h={"lungs": {"liver": k}}, death_per_h=d
    )
    fate = LabelFate(free_label_to={"skeleton": 1.0})
    for t, s in zip(TIMES, solve(model, fate, TIMES), strict=True):
        assert s.cell_label["lungs"] == pytest.approx(math.exp(-(k + d) * t), **TOL)
        expect_b = math.exp(-d * t) * (1 - math.exp(-k * t))
        assert s.cell_label["liver"] == pytest.approx(expect_b, **TOL)
        assert s.deposited_label["skeleton"] == pytest.approx(1 - math.exp(-d * t), **TOL)


# --------------------------------------------------------------------------- label fate


def test_release_rate():
    e = 0.004
    model = CellModel(initial_fraction={"lungs": 1.0})
    fate = LabelFate(release_per_h=e, free_label_to={"skeleton": 0.7, "excreted": 0.3})
    for t, s in zip(TIMES, solve(model, fate, TIMES), strict=True):
        assert s.live_cells["lungs"] == pytest.approx(1.0, **TOL)  # efflux does not kill
        assert s.cell_label["lungs"] == pytest.approx(math.exp(-e * t), **TOL)
        released = 1 - math.exp(-e * t)
        assert s.deposited_label["skeleton"] == pytest.approx(0.7 * released, **TOL)
        assert s.deposited_label["excreted"] == pytest.approx(0.3 * released, **TOL)


def test_release_and_death_together():
    d, e, f = 0.03, 0.01, 0.5
    model = CellModel(initial_fraction={"blood": 1.0}, death_per_h=d)
    fate = LabelFate(
        release_per_h=e, dead_cell_label_to={"liver": f}, free_label_to={"skeleton": 1.0}
    )
    for t, s in zip(TIMES, solve(model, fate, TIMES), strict=True):
        out = 1 - math.exp(-(d + e) * t)
        assert s.live_cells["blood"] == pytest.approx(math.exp(-d * t), **TOL)
        assert s.cell_label["blood"] == pytest.approx(math.exp(-(d + e) * t), **TOL)
        assert s.deposited_label["liver"] == pytest.approx(d * f / (d + e) * out, **TOL)
        expect_free = (d * (1 - f) + e) / (d + e) * out
        assert s.deposited_label["skeleton"] == pytest.approx(expect_free, **TOL)


def test_deposit_into_a_cell_compartment_name_is_kept_separate():
    # dead-cell label goes to "liver" while live cells also sit in the liver
    d = 0.05
    model = CellModel(initial_fraction={"liver": 1.0}, death_per_h=d)
    fate = LabelFate(dead_cell_label_to={"liver": 1.0}, free_label_to={"skeleton": 1.0})
    (s,) = solve(model, fate, [10.0])
    assert s.cell_label["liver"] == pytest.approx(math.exp(-0.5), **TOL)
    assert s.deposited_label["liver"] == pytest.approx(1 - math.exp(-0.5), **TOL)
    assert s.deposited_label["skeleton"] == pytest.approx(0.0, abs=1e-12)


def test_label_is_conserved():
    rng = np.random.default_rng(1234)
    comps = ["lungs", "blood", "liver", "spleen", "skeleton", "kidneys"]
    transfer = {
        src: {
            dst: float(rng.uniform(0.0, 0.3)) for dst in comps if dst != src and rng.random() < 0.6
        }
        for src in comps
    }
    raw = rng.uniform(0.1, 1.0, size=len(comps))
    model = CellModel(
        initial_fraction={c: float(v / raw.sum()) for c, v in zip(comps, raw, strict=True)},
        transfer_per_h=transfer,
        death_per_h=0.013,
        proliferation_per_h={"spleen": 0.02, "skeleton": 0.01},
    )
    fate = LabelFate(
        release_per_h=0.002,
        dead_cell_label_to={"liver": 0.3, "spleen": 0.2},
        free_label_to={"skeleton": 0.5, "kidneys": 0.1, "excreted": 0.4},
    )
    hours = [0.0, 1.0, 7.5, 48.0, 200.0, 1000.0]
    states = solve(model, fate, hours)
    for s in states:
        total = sum(s.cell_label.values()) + sum(s.deposited_label.values())
        assert total == pytest.approx(1.0, abs=1e-9)
        assert min(s.cell_label.values()) >= -1e-12
        assert min(s.deposited_label.values()) >= -1e-12
    # excreted label only grows
    excreted = [s.deposited_label["excreted"] for s in states]
    assert excreted == sorted(excreted) and excreted[-1] > 0.0
    # dividing cells outnumber the label-carrying fraction (label per cell diluted)
    assert sum(states[-2].live_cells.values()) > sum(states[-2].cell_label.values())


# --------------------------------------------------------------------------- errors


def test_negative_time_raises():
    model = CellModel(initial_fraction={"lungs": 1.0})
    with pytest.raises(HomingError, match="after the infusion"):
        solve(model, None, [1.0, -0.5])


@pytest.mark.parametrize("free", [{"skeleton": 0.9}, {"skeleton": 0.8, "excreted": 0.3}])
def test_free_label_to_must_sum_to_one(free):
    model = CellModel(initial_fraction={"lungs": 1.0}, death_per_h=0.01)
    with pytest.raises(HomingError, match="free_label_to"):
        solve(model, LabelFate(free_label_to=free), [1.0])


def test_dead_cell_label_to_over_one_raises():
    model = CellModel(initial_fraction={"lungs": 1.0}, death_per_h=0.01)
    fate = LabelFate(dead_cell_label_to={"liver": 0.7, "spleen": 0.4})
    with pytest.raises(HomingError, match="dead_cell_label_to"):
        solve(model, fate, [1.0])


def test_dead_cell_label_to_partial_is_allowed():
    model = CellModel(initial_fraction={"lungs": 1.0}, death_per_h=0.01)
    fate = LabelFate(dead_cell_label_to={"liver": 0.3}, free_label_to={"excreted": 1.0})
    (s,) = solve(model, fate, [100.0])
    assert s.deposited_label["excreted"] == pytest.approx(0.7 * (1 - math.exp(-1.0)), **TOL)


# --------------------------------------------------------------------------- from_design

CELLS = {
    "initial_fraction": {"lungs": 0.6, "blood": 0.2},
    "transfer_per_h": {"lungs": {"liver": 0.08, "blood": 0.02}, "blood": {"spleen": 0.3}},
    "death_per_day": 0.48,
    "proliferation_per_day": {"spleen": 0.24},
}


def test_from_design_without_variability_is_exact():
    model = from_design(CELLS, 0.0, np.random.default_rng(0))
    assert model.initial_fraction == pytest.approx({"lungs": 0.75, "blood": 0.25}, abs=1e-15)
    assert model.transfer_per_h == {
        "lungs": {"liver": 0.08, "blood": 0.02},
        "blood": {"spleen": 0.3},
    }
    assert model.death_per_h == pytest.approx(0.02, abs=1e-15)
    assert model.proliferation_per_h == pytest.approx({"spleen": 0.01}, abs=1e-15)


def test_from_design_defaults_to_no_death_or_division():
    model = from_design({"initial_fraction": {"lungs": 0.5}}, 0.0, np.random.default_rng(0))
    assert model.initial_fraction == {"lungs": 1.0}
    assert model.death_per_h == 0.0
    assert model.transfer_per_h == {} and model.proliferation_per_h == {}


def test_from_design_with_variability_is_seeded():
    a = from_design(CELLS, 0.2, np.random.default_rng(42))
    b = from_design(CELLS, 0.2, np.random.default_rng(42))
    c = from_design(CELLS, 0.2, np.random.default_rng(43))
    exact = from_design(CELLS, 0.0, np.random.default_rng(42))
    assert a == b
    assert a != c
    assert a.death_per_h != exact.death_per_h
    assert a.transfer_per_h["blood"]["spleen"] != exact.transfer_per_h["blood"]["spleen"]
    assert a.initial_fraction != exact.initial_fraction
    assert sum(a.initial_fraction.values()) == pytest.approx(1.0, abs=1e-12)
    assert all(v > 0 for v in a.initial_fraction.values())


def test_from_design_variability_is_lognormal_with_given_sd():
    sd = 0.2
    rng = np.random.default_rng(7)
    logs = [math.log(from_design(CELLS, sd, rng).death_per_h / 0.02) for _ in range(3000)]
    assert abs(np.mean(logs)) < 4 * sd / math.sqrt(len(logs))
    assert np.std(logs) == pytest.approx(sd, rel=0.08)


def test_from_design_needs_somewhere_to_put_cells():
    with pytest.raises(HomingError, match="initial_fraction"):
        from_design({"initial_fraction": {"lungs": 0.0}}, 0.0, np.random.default_rng(0))


# --------------------------------------------------------------------------- tracer


def test_tracer_distribution_closed_form():
    bg = {"stomach": 0.06, "kidneys": 0.03, "liver": 0.01}
    uptake = {"spleen": 0.01, "liver": 0.02}
    minutes, half, voided = 50.0, 25.0, 0.4
    specific, blood = tracer_distribution(bg, uptake, minutes, half, voided)
    rest = 1 - (0.06 + 0.03 + 0.01 + 0.01 + 0.02)
    expect_blood = rest * 0.25  # two half-times
    assert blood == pytest.approx(expect_blood, abs=1e-12)
    assert specific == pytest.approx(
        {
            "stomach": 0.06,
            "kidneys": 0.03,
            "liver": 0.03,
            "spleen": 0.01,
            "bladder": (rest - expect_blood) * (1 - voided),
        },
        abs=1e-12,
    )
    # what is not in the body was voided
    voided_amount = (rest - expect_blood) * voided
    assert sum(specific.values()) + blood + voided_amount == pytest.approx(1.0, abs=1e-12)
    # the inputs are not changed
    assert bg == {"stomach": 0.06, "kidneys": 0.03, "liver": 0.01}


def test_tracer_distribution_bladder_background_adds():
    specific, blood = tracer_distribution({"bladder": 0.02}, {}, 25.0, 25.0, 0.5)
    rest = 0.98
    assert blood == pytest.approx(rest / 2, abs=1e-12)
    assert specific == pytest.approx({"bladder": 0.02 + (rest / 2) * 0.5}, abs=1e-12)


def test_tracer_distribution_at_injection_all_rest_in_blood():
    specific, blood = tracer_distribution({"stomach": 0.1}, {}, 0.0, 30.0, 0.3)
    assert blood == pytest.approx(0.9, abs=1e-12)
    assert specific["bladder"] == pytest.approx(0.0, abs=1e-12)


def test_tracer_distribution_blood_keys_go_to_body_wide_fraction():
    bg = {"blood": 0.05, "stomach": 0.05}
    uptake = {"blood": 0.01, "spleen": 0.04}
    minutes, half, voided = 30.0, 10.0, 0.0
    specific, blood = tracer_distribution(bg, uptake, minutes, half, voided)
    rest = 1 - 0.15
    assert "blood" not in specific
    assert blood == pytest.approx(0.06 + rest / 8, abs=1e-12)
    assert specific == pytest.approx(
        {"stomach": 0.05, "spleen": 0.04, "bladder": rest * 7 / 8}, abs=1e-12
    )
    assert sum(specific.values()) + blood == pytest.approx(1.0, abs=1e-12)  # nothing voided


def test_tracer_uptake_over_one_raises():
    with pytest.raises(HomingError, match="more than"):
        tracer_distribution({"stomach": 0.7}, {"spleen": 0.4}, 10.0, 25.0, 0.5)


def test_smooth_warp_has_the_asked_peak_and_stays_invertible():
    from homing.sim import phantom

    rng = np.random.default_rng(3)
    field, aff = phantom.smooth_displacement(rng, np.zeros(3), np.array([20.0, 10, 40]), 1.0, 8.0)
    assert np.linalg.norm(field, axis=0).max() == pytest.approx(1.0)
    spacing = aff[0, 0]
    # Jacobian determinant of x -> x + u(x) on the field grid: positive everywhere (no folds).
    grads = [np.gradient(field[i], spacing) for i in range(3)]
    jac = np.empty(field.shape[1:] + (3, 3))
    for i in range(3):
        for k in range(3):
            jac[..., i, k] = grads[i][k] + (1.0 if i == k else 0.0)
    det = np.linalg.det(jac)
    assert det.min() > 0.5 and det.max() < 1.5
