"""One simulated animal's own anatomy: the Digimouse labels under a per-animal scale, smooth
random warp, optional tumour and (in a mouse hotel) limb and tail pose."""

from __future__ import annotations

import numpy as np

from homing.sim import phantom
from homing.sim.biology import animal_rng
from homing.sim.design import ANIMAL_VOXEL_MM, TUMOUR
from homing.sim.hotel_design import poses_on
from homing.sim.hotel_parts import pose_limbs_and_tail
from homing.sim.scan import AnimalAnatomy


def animal_anatomy(
    design: dict,
    animal_id: str,
    atlas_labels: np.ndarray,
    atlas_aff: np.ndarray,
    body_centre: np.ndarray,
    rng: np.random.Generator,
) -> tuple[AnimalAnatomy, float]:
    """The animal's own anatomy (the atlas scaled about its body centre, warped on the
    ANIMAL_VOXEL_MM grid, with the design's tumour, and with its hotel limb and tail pose
    when ``hotel.poses`` is on for it) and its body weight (g)."""
    anat = design["anatomy"]
    scale = 1.0 + rng.uniform(-anat["scale_range"], anat["scale_range"], size=3)
    # Drawn between the scale and the warp: the order of draws fixes every animal.
    weight_g = round(float(anat["base_weight_g"] * np.prod(scale) * rng.normal(1, 0.03)), 1)
    animal_from_atlas = phantom.scale_about(body_centre, scale)
    labels_a, aff_a = phantom.deform_labels(
        atlas_labels,
        atlas_aff,
        animal_from_atlas,
        rng,
        anat["deformation_mm"],
        anat["deformation_smoothness_mm"],
        ANIMAL_VOXEL_MM,
        anat["margin_mm"] + 4.0,
    )
    if "tumour" in anat:
        t = anat["tumour"]
        labels_a = phantom.add_tumour(labels_a, aff_a, t["site"], t["radii_mm"], TUMOUR.label)
    if poses_on(design, animal_id):
        # A stream of its own: the draws above (and the animal's biology) stay as they were.
        pose_rng = animal_rng(design["seed"], animal_id, "hotel-pose")
        labels_a, aff_a, _ = pose_limbs_and_tail(labels_a, aff_a, pose_rng)
    centre_a = (aff_a @ np.append(np.argwhere(labels_a > 0).mean(axis=0), 1.0))[:3]
    return AnimalAnatomy(labels_a, aff_a, centre_a, animal_from_atlas), weight_g
