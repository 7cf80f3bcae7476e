"""Biology over time for simulated studies (DOMAIN.md §1).

Cells move between *compartments* — atlas organs, ``"tumour"`` and ``"blood"`` (circulating
cells, spread evenly over the whole body) — by first-order transfer, die and divide. An ex vivo
label rides in the live cells: division halves the label per cell but leaves the organ total
unchanged; death and efflux release it. Released label is deposited where the design says (dead
cells in liver and spleen; free 89Zr to bone, or out through the kidneys under deferoxamine),
or ``"excreted"``. Everything is a linear system solved exactly with a matrix exponential, so
it is deterministic and costs nothing.

All label amounts are fractions of the infused label, decay-corrected to the infusion: physical
decay is applied by the caller. Cell numbers are fractions of the cells infused.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.linalg import expm

from homing import HomingError

BLOOD = "blood"
EXCRETED = "excreted"

#: Free 89Zr goes to bone (hydroxyapatite); deferoxamine chelates it and the kidneys clear it.
DEFAULT_FREE_LABEL_TO = {"skeleton": 0.8, "liver": 0.1, EXCRETED: 0.1}
DEFAULT_FREE_LABEL_TO_DFO = {"kidneys": 0.05, EXCRETED: 0.95}


@dataclass
class CellModel:
    """Trafficking of live cells. Rates are first-order constants per hour."""

    initial_fraction: dict[str, float]
    transfer_per_h: dict[str, dict[str, float]] = field(default_factory=dict)
    death_per_h: float = 0.0
    proliferation_per_h: dict[str, float] = field(default_factory=dict)

    def compartments(self) -> list[str]:
        """Every compartment a cell can be in, in a fixed order."""
        names = set(self.initial_fraction) | set(self.transfer_per_h)
        for targets in self.transfer_per_h.values():
            names |= set(targets)
        names |= set(self.proliferation_per_h)
        return sorted(names)


@dataclass
class LabelFate:
    """Where an ex vivo label goes once it leaves live cells. Rates per hour."""

    release_per_h: float = 0.0
    dead_cell_label_to: dict[str, float] = field(default_factory=dict)
    free_label_to: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_FREE_LABEL_TO))


@dataclass
class State:
    """Compartment contents at one time.

    ``live_cells``: fraction of the infused cells alive in each compartment (may exceed 1 in
    total when cells divide). ``cell_label``: fraction of the infused label inside live cells.
    ``deposited_label``: fraction of the infused label outside live cells (dead-cell debris in
    phagocytes, free label in bone, ...), including ``"excreted"``.
    """

    live_cells: dict[str, float]
    cell_label: dict[str, float]
    deposited_label: dict[str, float]


def from_design(cells: dict, variability: float, rng: np.random.Generator) -> CellModel:
    """A :class:`CellModel` from a design's ``cells`` block, each rate and starting fraction
    multiplied by a log-normal factor of SD ``variability`` (animal-to-animal spread)."""

    def jitter(value: float) -> float:
        return float(value * np.exp(rng.normal(0.0, variability))) if variability else value

    initial = {k: jitter(v) for k, v in sorted(cells["initial_fraction"].items())}
    total = sum(initial.values())
    if total <= 0:
        raise HomingError("cells.initial_fraction must put the infused cells somewhere")
    return CellModel(
        initial_fraction={k: v / total for k, v in initial.items()},
        transfer_per_h={
            src: {dst: jitter(rate) for dst, rate in sorted(targets.items())}
            for src, targets in sorted(cells.get("transfer_per_h", {}).items())
        },
        death_per_h=jitter(cells.get("death_per_day", 0.0)) / 24.0,
        proliferation_per_h={
            k: jitter(v) / 24.0 for k, v in sorted(cells.get("proliferation_per_day", {}).items())
        },
    )


def _check_sinks(mapping: dict[str, float], what: str, allow_partial: bool = False) -> None:
    total = sum(mapping.values())
    if total > 1.0 + 1e-9 or (not allow_partial and abs(total - 1.0) > 1e-6):
        need = "at most 1" if allow_partial else "exactly 1"
        raise HomingError(f"{what} fractions sum to {total:.4g}; they must sum to {need}")


def solve(model: CellModel, fate: LabelFate | None, hours: list[float]) -> list[State]:
    """Compartment contents at each time (hours after infusion, ≥ 0)."""
    if any(h < 0 for h in hours):
        raise HomingError(f"times must be after the infusion, got {min(hours)} h")
    fate = fate or LabelFate()
    _check_sinks(fate.free_label_to, "free_label_to")
    _check_sinks(fate.dead_cell_label_to, "dead_cell_label_to", allow_partial=True)
    comps = model.compartments()
    deposits = sorted(set(fate.dead_cell_label_to) | set(fate.free_label_to))
    nc = len(comps)
    n_idx = {c: i for i, c in enumerate(comps)}
    l_idx = {c: nc + i for i, c in enumerate(comps)}
    p_idx = {d: 2 * nc + i for i, d in enumerate(deposits)}
    a = np.zeros((2 * nc + len(deposits),) * 2)
    death, release = model.death_per_h, fate.release_per_h
    to_free = death * (1.0 - sum(fate.dead_cell_label_to.values())) + release
    for c in comps:
        out = sum(model.transfer_per_h.get(c, {}).values())
        a[n_idx[c], n_idx[c]] += -out - death + model.proliferation_per_h.get(c, 0.0)
        a[l_idx[c], l_idx[c]] += -out - death - release
        for dst, rate in model.transfer_per_h.get(c, {}).items():
            a[n_idx[dst], n_idx[c]] += rate
            a[l_idx[dst], l_idx[c]] += rate
        for dst, frac in fate.dead_cell_label_to.items():
            a[p_idx[dst], l_idx[c]] += death * frac
        for dst, frac in fate.free_label_to.items():
            a[p_idx[dst], l_idx[c]] += to_free * frac
    x0 = np.zeros(a.shape[0])
    for c, frac in model.initial_fraction.items():
        x0[n_idx[c]] = x0[l_idx[c]] = frac
    states = []
    for h in hours:
        x = expm(a * float(h)) @ x0
        states.append(
            State(
                live_cells={c: float(x[n_idx[c]]) for c in comps},
                cell_label={c: float(x[l_idx[c]]) for c in comps},
                deposited_label={d: float(x[p_idx[d]]) for d in deposits},
            )
        )
    return states


def tracer_distribution(
    background_fraction: dict[str, float],
    cell_uptake_fraction: dict[str, float],
    minutes_after_injection: float,
    blood_clearance_half_time_min: float,
    voided_fraction: float,
) -> tuple[dict[str, float], float]:
    """Where an injected tracer is at a scan, as fractions of the injected dose
    (decay-corrected to the injection).

    Organ uptake (``background_fraction``) and reporter-cell uptake are taken as plateaued.
    The rest starts in the blood pool and clears through the kidneys with the given half-time;
    of what has cleared, ``voided_fraction`` has left the body and the rest is in the bladder.
    Returns (specific fraction per organ, blood-pool fraction spread over the whole body).
    """
    specific: dict[str, float] = {}
    for source in (background_fraction, cell_uptake_fraction):
        for organ, frac in source.items():
            specific[organ] = specific.get(organ, 0.0) + frac
    rest = 1.0 - sum(specific.values())
    if rest < 0:
        raise HomingError(
            f"organ and cell uptake add up to {1 - rest:.3g} of the injected dose (more than "
            "all of it); lower background_fraction or uptake_fraction_of_id_per_1e6_cells"
        )
    blood = specific.pop(BLOOD, 0.0) + rest * 2.0 ** (
        -minutes_after_injection / blood_clearance_half_time_min
    )
    cleared = 1.0 - sum(specific.values()) - blood
    specific["bladder"] = specific.get("bladder", 0.0) + cleared * (1.0 - voided_fraction)
    return specific, blood
