"""Figures for the report. Plotting only: the numbers come from the tables."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from homing.core import io  # noqa: E402


def tac_time_axis(table: pd.DataFrame) -> tuple[str, str]:
    """(column, axis label) for an animal's time axis: days since the cell infusion, or, for
    an animal without one (a control), hours since the scan's own injection."""
    if table.days_since_infusion.notna().all():
        return "days_since_infusion", "days since cell infusion"
    return "hours_since_injection", "hours since tracer injection (no cell infusion)"


def tac_figure(table: pd.DataFrame, organs: list[str], out_png: Path) -> None:
    """Time-activity curves of one animal: %ID/g (decay-corrected to injection) per organ
    against days since cell infusion (hours since injection without one); ex vivo animals
    also get label-equivalent cells."""
    animal = table.animal_id.iloc[0]
    exvivo = table.label_equivalent_cells.notna().any()
    ncols = 2 if exvivo else 1
    x_column, x_label = tac_time_axis(table)
    fig, axes = plt.subplots(1, ncols, figsize=(5.5 * ncols, 4.2), squeeze=False)
    sub = table[table.organ.isin(organs)]
    for organ, rows in sub.groupby("organ", sort=False):
        rows = rows.sort_values(x_column)
        x = rows[x_column]
        axes[0, 0].plot(x, rows.percent_id_per_g, marker="o", label=organ)
        if exvivo:
            axes[0, 1].plot(x, rows.label_equivalent_cells, marker="o", label=organ)
    axes[0, 0].set(
        xlabel=x_label,
        ylabel="%ID/g (decay-corrected)",
        yscale="log",
        title=f"sub-{animal}: %ID/g",
    )
    if exvivo:
        axes[0, 1].set(
            xlabel=x_label,
            ylabel="label-equivalent cells",
            yscale="log",
            title=f"sub-{animal}: cells' worth of label",
        )
    axes[0, -1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    save_figure(fig, out_png)


def message_figure(text: str, out_png: Path) -> None:
    """A PNG that says, in words, why a figure is not drawn for this study (better than a
    missing report item or an empty plot)."""
    fig, ax = plt.subplots(figsize=(7.0, 2.2))
    ax.axis("off")
    ax.text(0.01, 0.5, text, va="center", ha="left", wrap=True, fontsize=10)
    save_figure(fig, out_png)


def save_figure(fig, out_png: Path) -> None:
    """Save a PNG atomically (temp file, then rename) and close the figure."""
    with io.atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)


def _ras_planes(ct_hu, labels, affine) -> tuple[list, int]:
    """Three planes (name, CT in HU, organ outline labels, pixel aspect) through the body's
    centre, reoriented to RAS+; and the largest label."""
    import nibabel as nib
    import numpy as np
    from scipy import ndimage

    # Reoriented to RAS+ as nib.as_closest_canonical does, as views: no copy of the box.
    ornt = nib.orientations.io_orientation(affine)
    ct = nib.orientations.apply_orientation(np.asarray(ct_hu), ornt)
    lab = nib.orientations.apply_orientation(np.asarray(labels, np.uint8), ornt)
    zooms = np.empty(3)
    zooms[ornt[:, 0].astype(int)] = np.linalg.norm(np.asarray(affine, float)[:3, :3], axis=0)
    body = lab > 0
    centre = (
        [int(round(c)) for c in ndimage.center_of_mass(body)]
        if body.any()
        else [n // 2 for n in lab.shape]
    )
    del body

    planes = [
        ("axial (R → left of image)", ct[:, :, centre[2]], _outline(lab, centre, 2)),
        ("coronal", ct[:, centre[1], :], _outline(lab, centre, 1)),
        ("sagittal", ct[centre[0], :, :], _outline(lab, centre, 0)),
    ]
    aspects = [zooms[1] / zooms[0], zooms[2] / zooms[0], zooms[2] / zooms[1]]
    n_label = int(lab.max()) if lab.size else 0
    return [(*p, a) for p, a in zip(planes, aspects, strict=True)], n_label


def _outline(lab, centre: list[int], axis: int):
    """Organ outlines in the plane through ``centre`` normal to ``axis``: voxels whose
    3×3×3 neighbourhood holds another label, skipping air and soft tissue (the body
    outline is clear). Computed on the 3 planes around it only: the same values."""
    import numpy as np
    from scipy import ndimage

    c = centre[axis]
    lo = max(c - 1, 0)
    slab = np.take(lab, np.arange(lo, min(c + 2, lab.shape[axis])), axis=axis)
    edge = ndimage.grey_dilation(slab, size=3) != ndimage.grey_erosion(slab, size=3)
    return np.take(np.where(edge & (slab > 1), slab, 0), c - lo, axis=axis)


def registration_qc_figure(
    ct_hu,
    labels,
    affine,
    title: str,
    out_png: Path,
    organ_names: dict[int, str],
    flagged: bool = False,
) -> None:
    """Atlas organ outlines on the CT in three planes through the body's centre.

    ``ct_hu`` and ``labels`` share one grid and RAS ``affine``; both are reoriented to RAS+
    first so the panels read the same for any scanner orientation. A ``flagged`` scan (QC
    failed) gets a red title and frame.
    """
    import numpy as np

    planes, n_label = _ras_planes(ct_hu, labels, affine)
    widths = [p[1].shape[0] for p in planes]
    fig, axes = plt.subplots(1, 3, figsize=(11, 6), gridspec_kw={"width_ratios": widths})
    n_colours = max(22, n_label + 1)  # user ROIs come after the atlas labels
    cmap = plt.get_cmap("tab20", n_colours)
    for ax, (name, img, out, aspect) in zip(axes, planes, strict=True):
        ax.imshow(img.T, cmap="gray", origin="lower", vmin=-1000, vmax=1500, aspect=aspect)
        masked = np.ma.masked_equal(out.T, 0)
        ax.imshow(
            masked,
            cmap=cmap,
            vmin=0,
            vmax=n_colours - 1,
            origin="lower",
            aspect=aspect,
            interpolation="nearest",
        )
        ax.set_title(name, fontsize=9)
        ax.set_axis_off()
    shown = np.concatenate([p[2].ravel() for p in planes])
    present = sorted(int(v) for v in np.unique(shown) if v > 1)
    handles = [
        plt.Line2D([], [], color=cmap(v), lw=3, label=organ_names.get(v, str(v))) for v in present
    ]
    fig.legend(handles=handles, loc="center right", fontsize=7, frameon=False)
    fig.suptitle(title, fontsize=10, color="red" if flagged else "black")
    if flagged:
        fig.patches.append(
            plt.Rectangle(
                (0.005, 0.005), 0.99, 0.99, transform=fig.transFigure, fill=False, ec="red", lw=4
            )
        )
    fig.subplots_adjust(right=0.84)
    save_figure(fig, out_png)
