"""Biology of a simulated animal: seeded random streams, the solved cell kinetics and the
per-session tracer or label distribution, and the activity infused with ex vivo labelled cells."""

from __future__ import annotations

import zlib
from datetime import datetime

import numpy as np

from homing.core.decay import activity_per_cell_bq, seconds_between
from homing.core.nuclides import nuclide_named
from homing.sim import kinetics
from homing.sim.design import parse_time


def animal_rng(seed: int, *keys: str) -> np.random.Generator:
    """An independent stream per (seed, animal, session): one animal can be regenerated
    alone and comes out identical."""
    return np.random.default_rng([seed, *(zlib.crc32(k.encode()) for k in keys)])


def _jittered(fractions: dict[str, float], sd: float, rng: np.random.Generator) -> dict:
    """Each fraction times a log-normal factor (log-sd ``sd``), drawn in name order so the
    random stream does not depend on the order of the YAML keys."""
    return {k: float(v * np.exp(rng.normal(0.0, sd))) for k, v in sorted(fractions.items())}


def _hours(a: datetime, b: datetime) -> float:
    """Hours from ``a`` to ``b``."""
    return seconds_between(a, b) / 3600.0


class AnimalBiology:
    """Per-animal biology: the solved kinetics and the per-session tracer parameters."""

    def __init__(self, cohort: dict, rng: np.random.Generator):
        self.cohort = cohort
        method = cohort["labelling_method"]
        sd = cohort["variability"]
        sessions = cohort["sessions"]
        self.cells_infused = float(cohort["cells_infused"])
        self.states = None
        if method in ("ex_vivo", "reporter_gene"):
            infusion = parse_time(cohort["infusion_datetime"])
            model = kinetics.from_design(cohort["cells"], sd, rng)
            fate = None
            if method == "ex_vivo":
                label = cohort["label"]
                sink = (
                    "free_label_to_with_deferoxamine" if label["deferoxamine"] else "free_label_to"
                )
                fate = kinetics.LabelFate(
                    release_per_h=label["release_per_day"] / 24.0,
                    dead_cell_label_to=label["dead_cell_label_to"],
                    free_label_to=label[sink],
                )
            hours = [_hours(infusion, parse_time(s["scan_start"])) for s in sessions]
            self.states = kinetics.solve(model, fate, hours)
        self.background = None
        if "tracer" in cohort:
            self.background = _jittered(cohort["tracer"]["background_fraction"], sd, rng)

    def distribution(
        self, s_idx: int, session: dict, rng: np.random.Generator
    ) -> tuple[dict, float, dict, dict]:
        """(specific fraction per organ, body-wide fraction, live cells per organ or "blood",
        deposited label fraction per organ) at one session, fractions of the injected or
        infused activity decay-corrected to its injection. A tracer's organ uptake varies a
        little from session to session (``rng``)."""
        state = self.states[s_idx] if self.states else None
        cells = {k: v * self.cells_infused for k, v in (state.live_cells if state else {}).items()}
        if self.cohort["labelling_method"] == "ex_vivo":
            specific: dict[str, float] = {}
            for source in (state.cell_label, state.deposited_label):
                for organ, frac in source.items():
                    if organ not in (kinetics.BLOOD, kinetics.EXCRETED):
                        specific[organ] = specific.get(organ, 0.0) + frac
            return specific, state.cell_label.get(kinetics.BLOOD, 0.0), cells, state.deposited_label
        tracer = self.cohort["tracer"]
        u = tracer["uptake_fraction_of_id_per_1e6_cells"]
        uptake = {k: n / 1e6 * u for k, n in cells.items()}
        minutes = (
            _hours(parse_time(session["tracer_injection"]), parse_time(session["scan_start"]))
            * 60.0
        )
        specific, blood = kinetics.tracer_distribution(
            _jittered(self.background, self.cohort["variability"] / 2.0, rng),
            uptake,
            minutes,
            tracer["blood_clearance_half_time_min"],
            tracer["voided_fraction"],
        )
        return specific, blood, cells, {}


def infused_activity_bq(cohort: dict) -> float:
    """Ex vivo: the labelled cells' activity at infusion (Bq): cells × specific activity,
    decayed from labelling to infusion."""
    label = cohort["label"]
    return float(cohort["cells_infused"]) * activity_per_cell_bq(
        label["specific_activity_kbq_per_1e6_cells"],
        parse_time(label["labelling_datetime"]),
        parse_time(cohort["infusion_datetime"]),
        nuclide_named(label["nuclide"]).half_life_s,
    )
