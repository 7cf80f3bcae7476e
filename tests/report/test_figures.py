"""Figures: every curve has an x axis it can be drawn on."""

from __future__ import annotations

import math

import pandas as pd

from homing.report import figures


def _animal(days_since_infusion: list[float]) -> pd.DataFrame:
    rows = []
    for day, hours in zip(days_since_infusion, [1.0, 25.0, 73.0], strict=True):
        for organ, value in (("liver", 8.0), ("lungs", 3.0)):
            rows.append(
                {
                    "animal_id": "C01",
                    "organ": organ,
                    "days_since_infusion": day,
                    "hours_since_injection": hours,
                    "percent_id_per_g": value,
                    "label_equivalent_cells": float("nan"),
                }
            )
    return pd.DataFrame(rows)


def _drawn(table, monkeypatch, tmp_path):
    saved = {}
    monkeypatch.setattr(figures, "save_figure", lambda fig, out: saved.setdefault("fig", fig))
    figures.tac_figure(table, ["liver", "lungs"], tmp_path / "tac.png")
    ax = saved["fig"].axes[0]
    return ax, [x for line in ax.get_lines() for x in line.get_xdata()]


def test_control_without_infusion_is_drawn_on_hours_since_injection(monkeypatch, tmp_path):
    nan = float("nan")
    ax, xs = _drawn(_animal([nan, nan, nan]), monkeypatch, tmp_path)
    assert len(xs) == 6 and all(math.isfinite(x) for x in xs)
    assert sorted(set(xs)) == [1.0, 25.0, 73.0]
    assert "hours since tracer injection" in ax.get_xlabel()


def test_infused_animal_is_drawn_on_days_since_infusion(monkeypatch, tmp_path):
    ax, xs = _drawn(_animal([0.1, 1.1, 3.1]), monkeypatch, tmp_path)
    assert sorted(set(xs)) == [0.1, 1.1, 3.1]
    assert ax.get_xlabel() == "days since cell infusion"
