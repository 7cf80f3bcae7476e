"""Figures for the report. Plotting only: the numbers come from the tables."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402


def tac_figure(table: pd.DataFrame, organs: list[str], out_png: Path) -> None:
    """Time-activity curves of one animal: %ID/g (decay-corrected to injection) per organ
    against days since cell infusion; ex vivo animals also get label-equivalent cells."""
    animal = table.animal_id.iloc[0]
    exvivo = table.label_equivalent_cells.notna().any()
    ncols = 2 if exvivo else 1
    fig, axes = plt.subplots(1, ncols, figsize=(5.5 * ncols, 4.2), squeeze=False)
    sub = table[table.organ.isin(organs)]
    for organ, rows in sub.groupby("organ", sort=False):
        rows = rows.sort_values("days_since_infusion")
        x = rows.days_since_infusion
        axes[0, 0].plot(x, rows.percent_id_per_g, marker="o", label=organ)
        if exvivo:
            axes[0, 1].plot(x, rows.label_equivalent_cells, marker="o", label=organ)
    axes[0, 0].set(
        xlabel="days since cell infusion",
        ylabel="%ID/g (decay-corrected)",
        yscale="log",
        title=f"sub-{animal}: %ID/g",
    )
    if exvivo:
        axes[0, 1].set(
            xlabel="days since cell infusion",
            ylabel="label-equivalent cells",
            yscale="log",
            title=f"sub-{animal}: cells' worth of label",
        )
    axes[0, -1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    save_figure(fig, out_png)


def save_figure(fig, out_png: Path) -> None:
    """Save a PNG atomically (temp file, then rename) and close the figure."""
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_png.with_name(f".{out_png.name}.tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    os.replace(tmp, out_png)
