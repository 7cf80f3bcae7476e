"""Ex vivo labelled cells: where the infused label went, and how far to trust it as cells.

DOMAIN.md §1 and §3:

* fraction of the infused activity per organ = A_organ / A_infused, both at the infusion
  (the injection of an ex vivo scan is the cell infusion), from ``activity_infused_mbq``
  (animals.tsv);
* whole-body retention = activity in the whole field of view / A_infused, at the infusion:
  what is left of the label in the animal (excretion and, for a partial field of view,
  what lies outside it lower it);
* free label: dead cells release it, and free 89Zr goes to bone; a skeleton %ID that rises
  between sessions is flagged;
* labels that leak (64Cu-PTSM about 22 % left after a day, 111In-oxine 43–52 % after 24 h,
  18F-FDG effluxes within hours) make label-equivalent cells an upper bound on where the
  cells are, and are flagged on every row;
* a labelling dose above the radiotoxicity threshold (e.g. 37 kBq/10⁶ for activated CD8 T
  cells) is flagged: the cells imaged may not behave as unlabelled ones.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

#: Labels that do not stay in the cells, by a word of the label's name (animals.tsv
#: label_name, lower case) and nuclide: the flag and what the literature reports.
LEAKING_LABELS = (
    ("ptsm", "64Cu", "label_leaks_64cu_ptsm", "about 22 % of 64Cu-PTSM stays after 1 day"),
    ("oxine", "111In", "label_leaks_111in_oxine", "43-52 % of 111In-oxine stays after 24 h"),
    ("fdg", "18F", "label_leaks_18f_fdg", "18F-FDG effluxes from cells within hours"),
)


def label_flags(animal: dict, radiotoxicity_kbq_per_1e6_cells: float) -> list[str]:
    """Flags for every row of an ex vivo labelled animal: a leaking label, and a labelling
    specific activity (kBq per 10⁶ cells) above ``radiotoxicity_kbq_per_1e6_cells``."""
    if animal.get("labelling_method") != "ex_vivo":
        return []
    name = str(animal.get("label_name") or "").lower()
    nuclide = str(animal.get("label_nuclide") or "")
    flags = [flag for word, nuc, flag, _ in LEAKING_LABELS if word in name and nuc == nuclide]
    specific = animal.get("labelling_specific_activity_kbq_per_1e6_cells")
    if _number(specific) and float(specific) > radiotoxicity_kbq_per_1e6_cells:
        flags.append("labelling_dose_above_radiotoxicity_threshold")
    return flags


def infused_activity_bq(animal: dict) -> float:
    """The activity infused with the cells (Bq, at the infusion), or NaN when not given."""
    value = animal.get("activity_infused_mbq")
    return float(value) * 1e6 if _number(value) else float("nan")


def whole_body_activity_bq(image_at_injection: np.ndarray, voxel_ml: float) -> float:
    """Activity (Bq) in the whole field of view of an image decay-corrected to the
    injection (Bq/mL); negative noise voxels count as they are (clipping would bias)."""
    return float(np.sum(image_at_injection, dtype=np.float64)) * voxel_ml


def free_label_rising(
    table: pd.DataFrame, min_rise_percent_id: float, organ: str = "skeleton"
) -> pd.Series:
    """Per row of one animal's table (all sessions): True on the sessions where the
    ``organ``'s %ID rose by more than ``min_rise_percent_id`` (percentage points) since the
    animal's previous session: label freed from dead cells accumulating in bone."""
    bone = table[table.organ == organ].sort_values("scan_start_datetime")
    rise = bone.percent_injected_dose.diff()
    rising_sessions = set(bone.session_id[rise > min_rise_percent_id])
    return table.session_id.isin(rising_sessions)


def _number(value) -> bool:
    """Whether a sheet cell holds a finite number."""
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False
