"""Tissue density per organ (g/mL), for %ID/g by the organ's own mass.

The field's convention divides %ID/mL by 1 g/mL; lung (about 0.3–0.5 g/mL) and bone (about
1.3–1.5 g/mL) are then off by a factor of 2–3 and ~1.4. Homing reports both: %ID/g at
1 g/mL and at the density of the organ's tissue class, with the density used in the table.

Values (DOMAIN.md §7; adult reference values, the usual stand-in for mouse):

* soft tissue 1.04 g/mL: ICRP Publication 89 (2002) / ICRP 110 (2009), soft tissues
  1.03–1.06 g/mL;
* skeleton 1.4 g/mL: whole skeleton 1.3–1.5 g/mL (cortical bone alone about 1.9), ICRP 89;
* lung 0.40 g/mL: 0.3–0.5 g/mL depending on inflation (ICRP 110 inflated adult lung 0.26;
  mouse micro-CT lung at end-expiration is denser), DOMAIN.md §7;
* fluid-filled organs (bladder urine, eyes) 1.01 g/mL: water-like contents (urine
  1.005–1.030, vitreous humour about 1.005), the soft-tissue lower bound rounded down;
* adipose 0.95 g/mL (ICRP 89), for user ROIs named as fat.

A study can override any organ's value in the config
(``quantification.organ_density_g_per_ml``), e.g. a lung density measured from its own CT.
"""

from __future__ import annotations

from homing import HomingError
from homing.registration.atlas import ORGANS

#: Density (g/mL) of each tissue class of the atlas, and where the value comes from.
CLASS_DENSITY_G_PER_ML: dict[str, tuple[float, str]] = {
    "soft": (1.04, "ICRP 89/110 soft tissue 1.03-1.06 g/mL"),
    "bone": (1.4, "ICRP 89 whole skeleton 1.3-1.5 g/mL"),
    "lung": (0.40, "lung 0.3-0.5 g/mL by inflation (ICRP 110 inflated 0.26)"),
    "fluid": (1.01, "water-like contents (urine 1.005-1.030, vitreous about 1.005)"),
    "adipose": (0.95, "ICRP 89 adipose tissue 0.95 g/mL"),
}
#: User ROIs (tumours, lymph nodes, ...) are soft tissue unless the config says otherwise.
ROI_TISSUE_CLASS = "soft"
_CLASS_OF_ORGAN = {o.name: o.tissue_class for o in ORGANS if o.tissue_class != "air"}


def organ_density(name: str, overrides: dict[str, float] | None = None) -> tuple[float, str]:
    """(density in g/mL, its source) for an atlas organ or user ROI named ``name``.

    ``overrides`` (config ``quantification.organ_density_g_per_ml``) win; an atlas organ
    takes its tissue class's value; any other region (a user ROI) is soft tissue.
    """
    overrides = overrides or {}
    if name in overrides:
        value = float(overrides[name])
        if not value > 0:
            raise HomingError(
                f"config key quantification.organ_density_g_per_ml.{name}: {value} g/mL is "
                "not a positive density"
            )
        return value, "config quantification.organ_density_g_per_ml"
    tissue = _CLASS_OF_ORGAN.get(name, ROI_TISSUE_CLASS)
    return CLASS_DENSITY_G_PER_ML[tissue]
