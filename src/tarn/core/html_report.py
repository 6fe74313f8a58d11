"""Self-contained HTML reports (inline CSS and PNG figures, no CDN): they open offline."""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Sequence

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

_CSS = """
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:1100px;color:#222}
h1{font-size:1.6rem}h2{font-size:1.25rem;margin-top:2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #ccc;padding:.25rem .6rem;
text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
.bad{color:#b00020;font-weight:600}.ok{color:#1b5e20}.note{color:#555}
img{max-width:100%}
"""


def esc(x: object) -> str:
    return html.escape(str(x))


# columns whose values are counts: printed as whole numbers ("5,421", never "5421.0000"),
# whatever type the figures arrived in (MetricFrame counts are floats)
COUNT_HEADERS = frozenset({"rows", "count", "counts", "fits", "trials", "batches"})


def fmt(v: object, count: bool = False) -> str:
    """A cell: counts as integers with thousands separators, other floats to 4 decimals."""
    if isinstance(v, bool | np.bool_):
        return esc(v)
    if count and isinstance(v, int | float | np.number) and math.isfinite(float(v)):
        return f"{round(float(v)):,}"
    if isinstance(v, float | np.floating):
        return f"{float(v):.4f}"
    if isinstance(v, np.integer):
        return esc(int(v))
    return esc(v)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]],
          classes: Sequence[str | None] | None = None) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    counts = [str(h).strip().lower() in COUNT_HEADERS for h in headers]
    body = []
    for i, r in enumerate(rows):
        cls = f' class="{classes[i]}"' if classes and classes[i] else ""
        body.append(f"<tr{cls}>" + "".join(
            f"<td>{fmt(v, counts[k] if k < len(counts) else False)}</td>"
            for k, v in enumerate(r)) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def legend_outside(ax) -> None:
    """The legend beside the plot, not over its bars (the page keeps it: tight bounding box)."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9, frameon=False)


def annotate_counts(ax, cm: np.ndarray) -> None:
    """Counts on a heatmap drawn with a sequential colormap (light to dark): white text on the
    dark cells, black on the light ones, so every count stays readable."""
    top = float(cm.max()) if cm.size else 0.0
    for (i, j), v in np.ndenumerate(cm):
        dark = top > 0 and v > top / 2
        ax.text(j, i, f"{int(v):,}", ha="center", va="center", fontsize=11,
                color="white" if dark else "black")


def figure(fig: plt.Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode()
    return f'<img alt="figure" src="data:image/png;base64,{data}">'


def page(title: str, sections: Sequence[str]) -> str:
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title>"
            f"<style>{_CSS}</style></head><body><h1>{esc(title)}</h1>{''.join(sections)}"
            "</body></html>\n")
