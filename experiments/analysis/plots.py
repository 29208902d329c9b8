"""Figures of a run: weight histograms (paper Fig. 1), residuals and loss (Fig. 2)."""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display on training hosts
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

_STAGE_TITLES = {
    "pretrained": "pretrained",
    "admm": "after ADMM",
    "retrained": "after retraining",
}


def histograms(hists: dict[str, dict[str, Any]], path: str) -> None:
    """One row per pruned layer, one column per stage; zeros are counted in the title."""
    stages = [s for s in _STAGE_TITLES if s in hists]
    layers = list(hists[stages[0]]) if stages else []
    if not layers:
        return
    width, height = 3.6 * len(stages), 2.4 * len(layers)
    fig, axes = plt.subplots(len(layers), len(stages), figsize=(width, height), squeeze=False)
    for j, stage in enumerate(stages):
        for i, layer in enumerate(layers):
            h = hists[stage][layer]
            ax = axes[i][j]
            edges = np.asarray(h["edges"])
            counts = np.asarray(h["counts"])
            if counts.sum():
                ax.stairs(counts, edges, fill=True, alpha=0.8)
            nonzero = h["size"] - h["zeros"]
            ax.set_title(
                f"{layer}: {_STAGE_TITLES[stage]}\n{nonzero:,} nonzero of {h['size']:,}",
                fontsize=8,
            )
            ax.tick_params(labelsize=7)
            ax.xaxis.set_major_locator(MaxNLocator(5))
            ax.yaxis.set_major_locator(MaxNLocator(4))
    # Fixed margins, in inches: tight_layout would measure every label, and with a few
    # ticks a panel that costs half of the figure's time (this runs at the end of every run).
    fig.subplots_adjust(
        left=0.5 / width,
        right=1 - 0.15 / width,
        bottom=0.3 / height,
        top=1 - 0.45 / height,
        wspace=0.2,
        hspace=0.45,
    )
    fig.savefig(path, dpi=110)
    plt.close(fig)


def residuals_and_loss(meta: dict[str, Any], path: str) -> None:
    """Primal and dual residual per layer over ADMM iterations; loss over the whole run."""
    admm = meta.get("admm", [])
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
    if admm:
        its = [r["iteration"] for r in admm]
        for layer in admm[0]["primal"]:
            axes[0].semilogy(its, [max(r["primal"][layer], 1e-12) for r in admm], label=layer)
            axes[1].semilogy(its, [max(r["dual"][layer], 1e-12) for r in admm], label=layer)
    axes[0].set_title("primal residual ||W - Z|| per layer")
    axes[1].set_title("dual residual ||Z_k+1 - Z_k|| per layer")
    for ax in axes[:2]:
        ax.set_xlabel("ADMM iteration")
        if admm and admm[0]["primal"]:
            ax.legend(fontsize=7)
    # Loss against the run's global step: stages are laid end to end.
    offset = 0
    for stage in ("pretrain", "admm", "retrain"):
        pts = [(s, v) for st, s, v in meta.get("loss", []) if st == stage]
        if not pts:
            continue
        xs = [offset + s for s, _ in pts]
        axes[2].plot(xs, [v for _, v in pts], label=stage)
        offset += pts[-1][0]
    axes[2].set_yscale("log")
    axes[2].set_title("training loss (cross-entropy) over the run")
    axes[2].set_xlabel("step")
    axes[2].legend(fontsize=7)
    fig.subplots_adjust(left=0.05, right=0.99, bottom=0.14, top=0.92, wspace=0.22)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def method_lines(
    rows: dict[str, dict[str, float]], columns: list[str], dense: float, path: str,
    ylabel: str = "test bits per character",
) -> None:  # fmt: skip
    """One line per method over the sparsity ``columns`` that end in ``%``, and separate
    markers (same colour) for the other columns (e.g. ``"2:4"``); ``rows[method][column]``
    the value (missing ones left out), ``dense`` dashed."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for method, values in rows.items():
        pts = [(i, values.get(c)) for i, c in enumerate(columns)]
        line = [
            (i, v)
            for (i, v), c in zip(pts, columns, strict=True)
            if v is not None and c.endswith("%")
        ]
        other = [
            (i, v)
            for (i, v), c in zip(pts, columns, strict=True)
            if v is not None and not c.endswith("%")
        ]
        (handle,) = ax.plot([i for i, _ in line], [v for _, v in line], marker="o", label=method)
        if other:
            ax.plot([i for i, _ in other], [v for _, v in other], marker="s", linestyle="none",
                    color=handle.get_color())  # fmt: skip
    ax.axhline(dense, color="gray", linestyle="--", linewidth=1, label="dense")
    ax.set_xticks(list(range(len(columns))), columns)
    ax.set_xlabel("sparsity of every attention and MLP kernel")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
