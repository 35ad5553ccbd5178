"""The quality benchmark's plots: test NDCG@10 per sampler beside the published points
(`quality_ndcg.png`) and the samplers' per-epoch diagnostics (`quality_diagnostics.png`)."""
from __future__ import annotations

import os
import statistics
from typing import Any, Optional

from benchmarks.quality_plan import row_name
from benchmarks.quality_report import RATIO_METRIC
from benchmarks.quality_results import Row, grouped, published_range

PLOT_NDCG, PLOT_DIAGNOSTICS = "quality_ndcg.png", "quality_diagnostics.png"


def _per_epoch_mean(runs: list[Row], name: str) -> tuple[list[int], list[float]]:
    """Epoch -> mean over seeds of diagnostic `name` (over the seeds that ran that epoch)."""
    values: dict[int, list[float]] = {}
    for run in runs:
        for epoch in run.get("per_epoch", []):
            value = (epoch.get("diagnostics") or {}).get(name)
            if isinstance(value, (int, float)):
                values.setdefault(int(epoch["epoch"]), []).append(float(value))
    epochs = sorted(values)
    return epochs, [statistics.mean(values[e]) for e in epochs]


Panels = list[tuple[tuple[str, str], dict[tuple[str, str], list[Row]]]]  # (dataset, model) -> rows


def _ndcg_figure(plt: Any, panels: Panels, published: dict[str, Any]) -> Any:
    """The trainer's and masked test NDCG@10 per row, std error bars, the published points."""
    fig, axes = plt.subplots(1, len(panels), figsize=(max(5.0, 0.6 * max(len(r) for _, r in panels)) * len(panels), 4.5),
                             squeeze=False)
    for ax, ((dataset, model), rows) in zip(axes[0], panels):
        names = [row_name(sampler, variant) for sampler, variant in rows]
        for offset, (metrics_key, label, color) in enumerate((("test", "the trainer's (its eval_mask)", "tab:blue"),
                                                        ("test_masked", "earlier items masked", "tab:orange"))):
            values = [[r[metrics_key][RATIO_METRIC] for r in runs if RATIO_METRIC in r.get(metrics_key, {})]
                      for runs in rows.values()]
            ax.bar([i + 0.4 * offset - 0.2 for i in range(len(names))],
                   [statistics.mean(v) if v else 0.0 for v in values], width=0.4, label=label, color=color,
                   yerr=[statistics.stdev(v) if len(v) > 1 else 0.0 for v in values], capsize=2)
        bounds = {i: published_range(published, dataset, model, name) for i, name in enumerate(names)}
        reported = {i: sum(b) / 2 for i, b in bounds.items() if b is not None}
        if reported:
            ax.plot([i + 0.2 for i in reported], list(reported.values()), "k_", markersize=14,
                    markeredgewidth=2, label="published (masked)")
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=45, ha="right", fontsize=8)
        ax.legend(fontsize=7)
        ax.set_title(f"{dataset}, {model}")
        ax.set_ylabel("test NDCG@10 (mean ± std)")
    return fig


def _diagnostics_figure(plt: Any, panels: Panels) -> Any:
    """Per-epoch means over seeds of the samplers' diagnostics, four panels per (dataset, model)."""
    # one colour per row name in every panel (20 distinct ones); a figure's second line is dashed
    names = list(dict.fromkeys(row_name(s, v) for _, rows in panels for s, v in rows))
    colors = {name: plt.get_cmap("tab20")(i % 20) for i, name in enumerate(names)}
    fig, axes = plt.subplots(len(panels), 4, figsize=(20, 3.8 * len(panels)), squeeze=False)
    for row_axes, ((dataset, model), rows) in zip(axes, panels):
        hard, false_negatives, divns, mdcns = row_axes
        for (sampler, variant), runs in rows.items():
            label = row_name(sampler, variant)
            for ax, name in ((hard, "neg_score"), (false_negatives, "false_negatives")):
                epochs, values = _per_epoch_mean(runs, name)
                if epochs:
                    ax.plot(epochs, values, marker=".", color=colors[label], label=label)
            figures = {"divns": (divns, ("diverse_distance", "hard_distance")),
                       "mdcns": (mdcns, ("divergence", "views_agree"))}.get(sampler.lower())
            for name, style in zip(figures[1] if figures else (), ("-", "--")):
                epochs, values = _per_epoch_mean(runs, name)
                if epochs:
                    figures[0].plot(epochs, values, style, marker=".", color=colors[label], label=f"{label} {name}")
        for ax, title, empty in ((hard, "negative hardness (neg_score)", "not in the plan"),
                                 (false_negatives, "false negatives: share among the user's later items",
                                  "not recorded by these runs"),
                                 (divns, "DivNS: diverse vs hard distance", "not in the plan"),
                                 (mdcns, "MDCNS: divergence, views_agree", "not in the plan")):
            ax.set_title(f"{dataset}, {model}: {title}", fontsize=9)
            ax.set_xlabel("epoch")
            if ax.lines:
                ax.legend(fontsize=6)
            else:
                ax.text(0.5, 0.5, empty, ha="center", va="center", transform=ax.transAxes)
    return fig


def write_plots(out: str, results: list[Row], published: Optional[dict[str, Any]] = None) -> list[str]:
    """quality_ndcg.png and quality_diagnostics.png of `results`; [] without matplotlib."""
    try:
        import matplotlib
    except ImportError:
        print("matplotlib is not installed: no plots (pip install matplotlib)")
        return []
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = list(grouped(results).items())
    if not panels:
        return []
    written = []
    figures = ((PLOT_NDCG, lambda: _ndcg_figure(plt, panels, published or {})),
               (PLOT_DIAGNOSTICS, lambda: _diagnostics_figure(plt, panels)))
    for name, draw in figures:  # one figure at a time
        fig = draw()
        fig.tight_layout()
        path = os.path.join(out, name)
        fig.savefig(path, dpi=100, metadata={"Software": None})  # no version stamp: same results, same files
        plt.close(fig)
        written.append(path)
    return written
