"""The plots of the retrieval-quality benchmarks (``quality.py``, ``quality_supervised.py``), drawn with matplotlib
(the ``dev`` extra) on the Agg backend: mAP against code length, and precision against recall as the Hamming
radius grows. Each benchmark gathers its own series; these functions only draw them."""

from __future__ import annotations


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def draw_map_vs_bits(ax, series, bits_list, title: str, ylabel: str = "mAP (whole ranking)", points=()) -> None:
    """On ``ax``: one line per ``(label, [(bits, map), ...], style)`` of ``series`` and one marker per
    ``(label, bits, map)`` of ``points`` (single runs, such as semi-supervised ones), bits on a log2 axis."""
    for label, pts, style in series:
        pts = sorted(pts)
        if pts:
            ax.plot([b for b, _ in pts], [m for _, m in pts], label=label, **{"marker": "o", **style})
    for label, bits, value in points:
        ax.scatter([bits], [value], marker="x", s=60, label=label)
    ax.set_xscale("log", base=2)
    ax.set_xticks(bits_list, [str(b) for b in bits_list])
    ax.set_xlabel("bits")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


def draw_pr(ax, curves, title: str) -> None:
    """On ``ax``: one precision-recall curve per ``(label, pr_curve, style)``, where ``pr_curve`` is the
    ``metrics["pr_curve"]`` dict of :func:`hashtool.evaluate.retrieval_metrics` (one point per Hamming radius)."""
    for label, pr, style in curves:
        ax.plot(pr["recall"], pr["precision"], label=label, **{"marker": ".", **style})
    ax.set_xlabel("recall (items within Hamming radius r)")
    ax.set_ylabel("precision")
    ax.set_title(title)
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


def save(fig, path) -> None:
    """Lay out, write (110 dpi) and close ``fig``."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    fig.clear()
    import matplotlib.pyplot as plt

    plt.close(fig)
