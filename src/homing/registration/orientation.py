"""Which way the mouse lies, from its CT alone: an anatomy check of the RAS frame the DICOM
headers gave.

Preclinical scanners often write a PatientPosition (and so an ImageOrientationPatient) that
does not describe how the mouse lay: an operator leaves HFS for a prone mouse placed feet
first. Ingestion then builds a RAS frame in which the head is at −z or the back at +y, and
CT → atlas registration, which starts from the headers' frame, silently fits an upside-down
or reversed atlas. :func:`anatomy_orientation` finds the head and the back from the anatomy:

* **head**: along the body's long axis (principal axis of the body mask), the lungs — air
  inside the body (< −300 HU after the body's holes are filled) — lie toward the head, and
  the skull, the densest bone at the end beyond them, marks it; the pelvis, hind limbs and
  tail are at the other end;
* **dorsal**: the spine is a bone ridge along the long axis, off the trunk's centre toward
  the back (in the abdomen the only bone there is), and the lungs lie dorsal of the heart,
  i.e. behind the thorax's centre.

:func:`check_orientation` raises a HomingError naming the file, what was found and what to
change when the anatomy disagrees with the headers' frame (head not toward +z, back not
toward −y), writes a QC PNG of what it found, and reports "inconclusive" — never an error, and
never a silent flip — when the anatomy does not decide (a field of view without lungs).

Everything runs on a copy of the CT averaged to ≈ ``WORK_MM`` (0.8 mm) voxels: a
512 × 512 × 680 micro-CT takes a few seconds (bench/bench_orientation.py).
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from homing import HomingError
from homing.core import io
from homing.registration import masks

#: Voxel edge (mm) the CT is averaged to before any analysis.
WORK_MM = 0.8
#: Air inside the body: aerated lung (≈ −450 … −700 HU in mice), gut gas.
LUNG_THRESHOLD_HU = -300.0
#: Bone at the working grid (averaging lowers thin bone's HU; 400 HU at 0.8 mm still holds
#: the skull, spine and pelvis).
BONE_THRESHOLD_HU = 300.0
#: Share of the trunk's length, at each end, in which the skull's bone is weighed.
SKULL_FRACTION = 0.2
#: Aerated lung below this volume (mm³) is not taken as lungs (a mouse's are ≈ 500–1000 mm³;
#: gut gas pockets and partial-volume rims are smaller).
MIN_LUNG_MM3 = 150.0
#: Air pockets inside the body at least this share of the largest are lungs too.
LUNG_SHARE = 0.3
#: A cue that decides must be at least this far from 0 (cues run from −1 to 1).
MIN_MARGIN = 0.15
#: Spine/lungs offset (mm) from the trunk's centre below which the back is not decided.
MIN_DORSAL_OFFSET_MM = 1.0
#: The body (its core) must be this many times longer (SD along its principal axis) than
#: wide for a long axis to be taken: a field of view shorter than the trunk is wide has none.
MIN_ELONGATION = 1.6
#: Largest angle (degrees) between the anatomy's direction and the one the headers give
#: (+z for the head, −y for the back) that still passes.
TOLERANCE_DEG = 60.0

HEAD_RAS = np.array([0.0, 0.0, 1.0])
DORSAL_RAS = np.array([0.0, -1.0, 0.0])


def downsample(hu, affine: np.ndarray, voxel_mm: float = WORK_MM):
    """(hu, affine) of a CT averaged over blocks of ≈ ``voxel_mm`` (float32). Reads ``hu`` (an
    array or a nibabel dataobj) a slab at a time, so a large CT is never copied whole."""
    affine = np.asarray(affine, dtype=float)
    edges = np.linalg.norm(affine[:3, :3], axis=0)
    steps = [max(1, int(round(voxel_mm / e))) for e in edges]
    shape = [n // s for n, s in zip(hu.shape, steps, strict=True)]
    if min(shape) < 1:
        raise HomingError(f"CT of shape {hu.shape} is smaller than one {voxel_mm} mm voxel")
    out = np.empty(shape, dtype=np.float32)
    sx, sy, sz = steps
    nx, ny, nz = shape
    for k in range(nz):
        slab = np.asarray(hu[: nx * sx, : ny * sy, k * sz : (k + 1) * sz], dtype=np.float32)
        out[:, :, k] = slab.reshape(nx, sx, ny, sy, sz).mean(axis=(1, 3, 4))
    small = affine.copy()
    small[:3, :3] = affine[:3, :3] * np.array(steps, float)
    # The centre of block (0, 0, 0) of the original grid.
    small[:3, 3] = affine[:3, :3] @ ((np.array(steps, float) - 1.0) / 2.0) + affine[:3, 3]
    return out, small


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


def anatomy_orientation(hu, affine: np.ndarray) -> dict:
    """Where the head and the back of the mouse in a CT (HU, RAS ``affine``) are, in RAS.

    Returns a dict:

    * ``head``: "conclusive" or "inconclusive"; ``head_ras``: unit RAS vector from the
      body's centre toward the head along its long axis (None when inconclusive);
      ``head_margin``: the agreeing cues' strength in [0, 1]; ``head_cues``: each cue's
      signed value (positive: toward ``long_axis_ras``) — ``lungs`` (lung centre's offset
      from the body's middle, as a fraction of the half length) and ``skull`` (bone at the
      lungs' end against bone at the other, as (a − b)/(a + b)); ``why`` when inconclusive;
    * ``dorsal``, ``dorsal_ras``, ``dorsal_margin``, ``dorsal_offset_mm``: the same for the
      back, from the spine's and the lungs' offsets from the trunk's centre, perpendicular
      to the long axis;
    * ``long_axis_ras``, ``centre_ras``, ``lungs_mm3``, ``body_length_mm``; ``markers``:
      RAS points (body centre, head end, a dorsal point) for the QC figure.
    """
    return _analyse(hu, affine)[0]


def _analyse(hu, affine: np.ndarray) -> tuple[dict, np.ndarray, np.ndarray]:
    """(anatomy_orientation's result, the downsampled CT, its affine)."""
    small, aff = downsample(hu, affine)
    voxel_mm = float(np.linalg.norm(aff[:3, :3], axis=0).max())
    body = masks.body_mask(small, voxel_mm)
    out: dict = {"head": "inconclusive", "dorsal": "inconclusive", "head_ras": None}
    out.update(dorsal_ras=None, head_margin=0.0, dorsal_margin=0.0, head_cues={})
    if body.sum() * voxel_mm**3 < 500.0:
        out.update(why_head="no body found", why_dorsal="no body found", markers={})
        return out, small, aff
    idx = np.argwhere(body)
    pts = idx @ aff[:3, :3].T + aff[:3, 3]
    centre = pts.mean(axis=0)
    # Long axis: the body core's principal axis (distal limbs and tail weigh little there).
    dist = ndimage.distance_transform_edt(body) * voxel_mm
    core = dist[body] >= min(2.0, 0.5 * dist.max())
    core_pts = pts[core] if core.sum() > 100 else pts
    cov = np.cov((core_pts - core_pts.mean(axis=0)).T)
    evals, evecs = np.linalg.eigh(cov)
    elongation = float(np.sqrt(evals[2] / max(evals[1], 1e-9)))
    out["elongation"] = elongation
    if elongation < MIN_ELONGATION:
        why = (
            f"no clear long axis (the body is {elongation:.1f}× as long as wide in the field of "
            "view, a mouse's trunk ≈ 3×)"
        )
        out.update(why_head=why, why_dorsal=why, markers={"centre": centre}, centre_ras=centre)
        out.setdefault("lungs_mm3", 0.0)
        return out, small, aff
    axis = evecs[:, 2]
    axis = axis * (1.0 if axis[np.argmax(np.abs(axis))] > 0 else -1.0)
    t = (pts - centre) @ axis
    t_lo, t_hi = np.percentile(t[core] if core.sum() > 100 else t, [1.0, 99.0])
    mid, half = 0.5 * (t_lo + t_hi), max(0.5 * (t_hi - t_lo), voxel_mm)
    out.update(long_axis_ras=axis, centre_ras=centre, body_length_mm=2.0 * half)

    vals = small[body]
    inner = ndimage.binary_erosion(body, iterations=1)
    lung = _lungs((small < LUNG_THRESHOLD_HU) & inner)[body]
    bone = vals > BONE_THRESHOLD_HU
    lungs_mm3 = float(lung.sum() * voxel_mm**3)
    out["lungs_mm3"] = lungs_mm3
    have_lungs = lungs_mm3 >= MIN_LUNG_MM3

    # --- head: lungs toward it, the skull at the end beyond them.
    cues: dict[str, float] = {}
    if have_lungs:
        cues["lungs"] = float(np.clip((np.median(t[lung]) - mid) / half, -1.0, 1.0))
        # The skull: bone per body voxel in the outer SKULL_FRACTION of the trunk's length
        # at each end (the head's tip is bony up to the snout; the other end holds the
        # pelvis and hind limbs among more soft tissue, and the tail, outside the core).
        excess = np.clip(vals - BONE_THRESHOLD_HU, 0.0, None)
        ends = [t > t_hi - SKULL_FRACTION * 2.0 * half, t < t_lo + SKULL_FRACTION * 2.0 * half]
        plus, minus = (float(excess[e].sum() / max(e.sum(), 1)) for e in ends)
        if plus + minus > 0:
            cues["skull"] = (plus - minus) / (plus + minus)
    out["head_cues"] = cues
    head_sign = 0.0
    if not have_lungs:
        out["why_head"] = f"no lungs in the field of view ({lungs_mm3:.0f} mm³ of air inside)"
    elif abs(cues["lungs"]) < MIN_MARGIN:
        out["why_head"] = f"the lungs lie mid-body (offset {cues['lungs']:+.2f} of half length)"
    elif (
        "skull" in cues
        and abs(cues["skull"]) >= MIN_MARGIN
        and (np.sign(cues["skull"]) != np.sign(cues["lungs"]))
    ):
        out["why_head"] = "lungs and densest bone lie at opposite ends"
    else:
        head_sign = float(np.sign(cues["lungs"]))
        agree = [abs(cues["lungs"])]
        if "skull" in cues and np.sign(cues["skull"]) == head_sign:
            agree.append(abs(cues["skull"]))
        out.update(head="conclusive", head_ras=head_sign * axis, head_margin=float(max(agree)))

    # --- dorsal: the spine off the trunk core's centre, perpendicular to the long axis (in
    # the abdomen, between lungs and pelvis, the only bone there); the lungs' offset must
    # not point the other way (they lie dorsal of the heart, but also right of it: a mouse's
    # right lung is the larger, so they only confirm).
    perp = (pts - centre) - np.outer(t, axis)
    trunk = np.abs(t - mid) < 0.6 * half
    if head_sign:
        trunk &= (t - float(np.median(t[lung]))) * head_sign < 0
    spine = _slice_offset(t, perp, bone & trunk, core, voxel_mm)
    lungs_off = _slice_offset(t, perp, lung & (np.abs(t - mid) < 0.8 * half), core, voxel_mm)
    if spine is None:
        out["why_dorsal"] = "no bone along the trunk (spine) in the field of view"
    else:
        size = float(np.linalg.norm(spine))
        out["dorsal_offset_mm"] = size
        cues_d = {"spine_mm": size}
        if lungs_off is not None:
            cues_d["lungs_mm"] = float(lungs_off @ _unit(spine))
        out["dorsal_cues"] = cues_d
        if size < MIN_DORSAL_OFFSET_MM:
            out["why_dorsal"] = f"the trunk's bone lies {size:.1f} mm off its centre only"
        elif cues_d.get("lungs_mm", 0.0) < -MIN_DORSAL_OFFSET_MM:
            out["why_dorsal"] = "spine and lungs lie on opposite sides of the trunk"
        else:
            margin = float(min(1.0, size / (4.0 * MIN_DORSAL_OFFSET_MM)))
            out.update(dorsal="conclusive", dorsal_ras=_unit(spine), dorsal_margin=margin)
    markers = {"centre": centre}
    if out["head_ras"] is not None:
        markers["head"] = centre + out["head_ras"] * (mid + head_sign * half) * head_sign
    if out["dorsal_ras"] is not None:
        markers["dorsal"] = centre + out["dorsal_ras"] * 8.0
    out["markers"] = markers
    return out, small, aff


def _lungs(air: np.ndarray) -> np.ndarray:
    """The lungs among the air inside the body: its largest 26-connected component and any
    at least LUNG_SHARE of it (lobes apart at 0.8 mm), not the smaller pockets of gut gas."""
    lab, n = ndimage.label(air, structure=np.ones((3, 3, 3), bool))
    if n == 0:
        return air
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    keep = sizes >= LUNG_SHARE * sizes.max()
    keep[0] = False
    return keep[lab]


def _slice_offset(t, perp, sel, core, voxel_mm: float) -> np.ndarray | None:
    """Mean over slabs (2 voxels thick) along the long axis of the ``sel`` voxels' centre
    minus the body core's centre in the same slab, perpendicular to the axis (RAS mm); None
    when fewer than 20 mm³ are selected or no slab holds both."""
    if sel.sum() * voxel_mm**3 < 20.0:
        return None
    slabs = np.round(t / (2.0 * voxel_mm)).astype(int)
    diffs = []
    for b in np.unique(slabs[sel]):
        here = slabs == b
        ref = here & core
        if ref.sum() >= 10:
            diffs.append(perp[here & sel].mean(axis=0) - perp[ref].mean(axis=0))
    return np.mean(diffs, axis=0) if diffs else None


#: PatientPosition values and what swapping head/feet or prone/supine makes of them.
_SWAP_HEAD = {"HFS": "FFS", "FFS": "HFS", "HFP": "FFP", "FFP": "HFP"}
_SWAP_BACK = {"HFS": "HFP", "HFP": "HFS", "FFS": "FFP", "FFP": "FFS"}
#: The scans.tsv column through which the true PatientPosition of a scan would be given.
OVERRIDE_KEY = "patient_position"


def check_orientation(
    hu,
    affine: np.ndarray,
    source: str,
    qc_png: Path,
    patient_position: str | None = None,
    tolerance_deg: float = TOLERANCE_DEG,
) -> dict:
    """Check a CT's RAS frame (``affine``, from its headers) against its anatomy.

    Writes ``qc_png`` (coronal and sagittal MIPs, the head and back found marked) and returns
    :func:`anatomy_orientation`'s result with ``status``: "ok" (each axis the anatomy decides
    is within ``tolerance_deg`` of the headers': head toward +z, back toward −y) or
    "inconclusive" (the anatomy decides neither or only one of them, and that one agrees;
    ``why`` says what was missing, for the caller to flag), and ``angles_deg``.

    Raises HomingError, naming ``source``, what was found, the PatientPosition the anatomy
    implies (given the header's ``patient_position``) and ``qc_png``, when a decided axis
    disagrees. Never flips anything.
    """
    result, small, aff = _analyse(hu, affine)
    angles = {}
    wrong = []
    for axis, want, what in (("head", HEAD_RAS, "head"), ("dorsal", DORSAL_RAS, "back")):
        found = result[f"{axis}_ras"]
        if found is None:
            continue
        angle = float(np.degrees(np.arccos(np.clip(found @ want, -1.0, 1.0))))
        angles[axis] = angle
        if angle > tolerance_deg:
            wrong.append((axis, what, found, angle))
    result["angles_deg"] = angles
    undecided = [a for a in ("head", "dorsal") if result[a] != "conclusive"]
    result["status"] = "wrong" if wrong else ("inconclusive" if undecided else "ok")
    if undecided:
        result["why"] = "; ".join(f"{a}: {result.get('why_' + a, 'undecided')}" for a in undecided)
    write_qc_png(small, aff, result, Path(qc_png), source)
    if wrong:
        raise HomingError(_wrong_message(source, result, wrong, patient_position, qc_png))
    return result


def _direction_name(v: np.ndarray) -> str:
    """The RAS half-axis nearest to ``v``, e.g. "−z (inferior)"."""
    names = [("+x (right)", "−x (left)"), ("+y (anterior)", "−y (posterior)")]
    names.append(("+z (superior)", "−z (inferior)"))
    k = int(np.argmax(np.abs(v)))
    return names[k][0 if v[k] > 0 else 1]


def _wrong_message(source, result, wrong, position, qc_png) -> str:
    found = []
    for axis, what, vec, angle in wrong:
        margin = result[f"{axis}_margin"]
        found.append(
            f"the {what} is toward {_direction_name(vec)}, {angle:.0f}° from where the "
            f"headers put it ({'+z' if axis == 'head' else '−y'}; margin {margin:.2f})"
        )
    axes = {w[0] for w in wrong}
    header = position or "(none)"
    implied = position
    if position in _SWAP_HEAD:
        implied = _SWAP_HEAD[position] if "head" in axes else position
        implied = _SWAP_BACK[implied] if "dorsal" in axes else implied
    pose = {"HF": "head first", "FF": "feet first", "P": "prone", "S": "supine"}
    described, shows = [], []
    if header in _SWAP_HEAD:
        described = [pose[header[:2]], pose[header[2]]]
        if "head" in axes:
            shows.append(pose[_SWAP_HEAD[header][:2]])
        if "dorsal" in axes:
            shows.append(pose[_SWAP_BACK[header][2]])
    said = f" ({', '.join(described)})" if described else ""
    shown = f"; the anatomy shows the mouse {' and '.join(shows)}" if shows else ""
    fix = (
        f"the anatomy says the mouse lay {implied}: correct PatientPosition to {implied} "
        f"(with an ImageOrientationPatient to match) and ingest again, or give the scan's "
        f"`{OVERRIDE_KEY}: {implied}` as a sheet override"
        if implied and implied != position
        else "correct PatientPosition/ImageOrientationPatient to how the mouse lay and "
        f"ingest again, or give the scan's `{OVERRIDE_KEY}` (HFP, FFP, HFS or FFS) as a "
        "sheet override"
    )
    return (
        f"{source}: the CT's anatomy disagrees with the orientation its headers give: "
        + "; ".join(found)
        + f". The header's PatientPosition {header}{said} and ImageOrientationPatient put the "
        f"head at +z and the back at −y{shown}. Registration to the atlas would fit it the "
        f"wrong way round, so nothing was flipped; {fix}. See {qc_png} (head H and back D "
        "marked)."
    )


def write_qc_png(small: np.ndarray, aff: np.ndarray, result: dict, png: Path, title: str):
    """Coronal and sagittal MIPs (RAS, head up if the headers are right) of the downsampled
    CT, with the head end (H) and back (D) the anatomy check found."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    ornt = nib.orientations.io_orientation(aff)
    ras = nib.orientations.apply_orientation(np.clip(small, -1000.0, 1500.0), ornt)
    ras_aff = aff @ nib.orientations.inv_ornt_aff(ornt, small.shape)
    to_vox = np.linalg.inv(ras_aff)
    edges = np.linalg.norm(ras_aff[:3, :3], axis=0)
    fig = Figure(figsize=(7.5, 5.0))
    views = (
        ("coronal MIP (image right: +x, the header's right)", 1, 0),
        ("sagittal MIP (image right: −y, the header's posterior)", 0, 1),
    )
    for i, (name, proj, horiz) in enumerate(views):
        ax = fig.add_subplot(1, 2, i + 1)
        mip = ras.max(axis=proj)  # (horiz axis, z)
        extent = (0, mip.shape[0] * edges[horiz], 0, mip.shape[1] * edges[2])
        img = mip.T if horiz == 0 else mip.T[:, ::-1]
        ax.imshow(img, cmap="gray", origin="lower", extent=extent, vmin=-1000, vmax=1500)
        for key, colour, label in (("head", "red", "H"), ("dorsal", "cyan", "D")):
            p = result.get("markers", {}).get(key)
            if p is None:
                continue
            v = to_vox[:3, :3] @ p + to_vox[:3, 3]
            h = v[horiz] * edges[horiz]
            if horiz == 1:
                h = extent[1] - h
            ax.plot([h], [v[2] * edges[2]], "o", color=colour, ms=8, mfc="none", mew=2)
            ax.annotate(
                label,
                (h, v[2] * edges[2]),
                color=colour,
                fontsize=12,
                xytext=(6, 6),
                textcoords="offset points",
            )
        ax.set_title(name, fontsize=8)
        ax.set_xlabel("mm")
        ax.set_ylabel("z (mm, superior up)")
    status = result.get("status", "")
    fig.suptitle(
        f"{title}: orientation check {status}; head {result['head']}, back {result['dorsal']}",
        fontsize=9,
    )
    with io.atomic_path(png) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
