"""Drawings of the studies' results (PNG through runtime.results; experiments come before report/ in the stage order)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from weightspace.runtime.results import pyplot, save_figure


def plot_path(path: Path, steps: list[dict[str, Any]], transitions: list[dict[str, Any]], *, title: str) -> None:
    """One path: robust Betti numbers and Chamfer to either end against t, transitions shaded."""
    plt = pyplot()
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(7, 5), sharex=True)
    t = [r["t"] for r in steps]
    for key, lab in (("rb0", "b0"), ("rb1", "b1"), ("rb2", "b2")):
        ax1.step(t, [r[key] for r in steps], where="post", label=f"robust {lab}")
    ax1.plot(t, [r["components_above"] for r in steps], "k.", ms=3, label="components > threshold")
    for tr in transitions:
        ax1.axvspan(tr["t_lo"], tr["t_hi"], color="red", alpha=0.4)
        ax1.axvline(0.5 * (tr["t_lo"] + tr["t_hi"]), color="red", lw=0.6)
    ax1.set_ylabel("Betti number")
    ax1.legend(fontsize=7)
    ax1.set_title(title, fontsize=9)
    ax2.plot(t, [r["chamfer_start"] for r in steps], ".-", label="Chamfer to start")
    ax2.plot(t, [r["chamfer_end"] for r in steps], ".-", label="Chamfer to end")
    ax2.set_xlabel("t")
    ax2.set_ylabel("Chamfer-L1")
    ax2.legend(fontsize=7)
    save_figure(fig, path)


def plot_pairs(path: Path, pairs: list[dict[str, Any]], transitions: list[dict[str, Any]]) -> None:
    """Pairs: histograms of transitions per path and of transition widths, within and across families."""
    plt = pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5))
    for within, lab in ((True, "within family"), (False, "across families")):
        ax1.hist([r["transitions"] for r in pairs if r["within_family"] == within], bins=range(0, 8), alpha=0.6, label=lab)
        widths = [t["width"] for t in transitions if t["within_family"] == within]
        if widths:  # no bar at all where no path of the kind has a transition
            ax2.hist(widths, bins=10, alpha=0.6, label=lab)
    if not transitions:
        ax2.text(0.5, 0.5, "no transitions", ha="center", va="center", transform=ax2.transAxes)
    ax1.set_xlabel("transitions per path")
    ax2.set_xlabel("transition width in t")
    ax1.legend(fontsize=7)
    save_figure(fig, path)


def plot_subspace(path: Path, summary: dict[str, dict[str, Any]], *, title: str) -> None:
    """The subspace study: topology kept (exact, robust) and validity per kind of point."""
    plt = pyplot()
    names = list(summary)
    keys = ("topology_kept_exact", "topology_kept_robust", "validity")
    fig, ax = plt.subplots(figsize=(7, 3.5))
    w = 0.8 / len(keys)
    for j, key in enumerate(keys):
        ax.bar(np.arange(len(names)) + j * w, [summary[n][key] for n in names], width=w, label=key)
    ax.set_xticks(np.arange(len(names)) + w, [n.replace("_", " ") for n in names], fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))  # beside the axes: bars reach 1.0
    ax.set_title(title, fontsize=9)
    save_figure(fig, path)


def plot_fit(path: Path, table: list[dict[str, Any]], *, views: list[int], sigmas: list[float], methods: list[str]) -> None:
    """The fit study: Chamfer to the clean shape and forgetting, per views x sigma and method."""
    plt = pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.5))
    labels = [f"V{v} s{s:g}" for v in views for s in sigmas]
    w = 0.8 / len(methods)
    for j, m in enumerate(methods):
        rows = [next(r for r in table if r["views"] == v and r["sigma"] == s and r["method"] == m) for v in views for s in sigmas]
        x = np.arange(len(labels)) + j * w
        ax1.bar(x, [r["chamfer_l1"] if np.isfinite(r["chamfer_l1"]) else 0 for r in rows], width=w, label=m)
        ax2.bar(x, [r["forgetting"] if np.isfinite(r["forgetting"]) else 0 for r in rows], width=w, label=m)
    for ax, name in ((ax1, "Chamfer-L1 to the clean shape"), (ax2, "forgetting (Chamfer after - before)")):
        ax.set_xticks(np.arange(len(labels)) + 0.4 - w / 2, labels, fontsize=7)
        ax.set_title(name, fontsize=9)
    # one legend under both panels: inside, it hid the bars of the last methods
    fig.legend(*ax1.get_legend_handles_labels(), fontsize=7, loc="upper center", bbox_to_anchor=(0.5, 0.0),
               ncol=min(len(methods), 6))
    save_figure(fig, path)


def plot_fit_curves(path: Path, methods: dict[str, dict[str, Any]], *, title: str) -> None:
    """The fit study over step budgets: Chamfer and F-score to the clean shape, forgetting (Chamfer change on
    the held-out shapes) and the drop in family-sample quality, one line per method."""
    plt = pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(10, 6.5), sharex=True)
    panels = (("fit", "chamfer_l1", "Chamfer-L1 to the clean shape"), ("fit", "fscore", "F-score (tau 0.02)"),
              ("forgetting", "chamfer_change", "forgetting: held-out Chamfer change"),
              ("forgetting", "family_quality_drop", "drop in family samples with their topology"))
    for ax, (part, key, name) in zip(axes.ravel(), panels):
        for m, curves in methods.items():
            steps = np.asarray(curves[part]["steps"], dtype=float)
            ax.plot(steps + 1, curves[part][key], ".-", label=m)
        ax.set_xscale("log")
        ax.set_title(name, fontsize=9)
    for ax in axes[1]:
        ax.set_xlabel("step budget + 1")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    save_figure(fig, path)


def plot_fit_forgetting(path: Path, methods: dict[str, dict[str, Any]], *, title: str) -> None:
    """Fit versus forgetting: one point per method and step budget (joined in budget order; the largest
    budget labelled), Chamfer to the clean shape against the held-out shapes' Chamfer change."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 5))
    for m, curves in methods.items():
        x, y = curves["fit"]["chamfer_l1"], curves["forgetting"]["chamfer_change"]
        line, = ax.plot(x, y, "o-", ms=4, label=m)
        ax.annotate(f"{curves['fit']['steps'][-1]}", (x[-1], y[-1]), fontsize=7, color=line.get_color())
        ax.plot(x[0], y[0], "s", ms=7, mfc="none", color=line.get_color())
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xlabel("Chamfer-L1 to the clean shape (lower is a better fit)")
    ax.set_ylabel("forgetting: held-out Chamfer change (lower is better)")
    ax.set_title(title + " (square: step 0)", fontsize=9)
    ax.legend(fontsize=7)
    save_figure(fig, path)
