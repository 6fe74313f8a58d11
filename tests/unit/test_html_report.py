"""The offline HTML pages: counts read as counts, every count on a heatmap readable, legends
beside the bars they describe."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import to_rgb

from tarn.core import html_report as html


def test_counts_print_as_integers_and_figures_to_four_decimals():
    page = html.table(["group", "rows", "selection rate"],
                      [["Female", 5421.0, 0.1234567], ["Male", np.int64(11060), np.float32(0.5)]])
    assert "<td>5,421</td>" in page and "<td>11,060</td>" in page
    assert "5421.0000" not in page and "<td>0.1235</td>" in page and "<td>0.5000</td>" in page
    assert html.fmt(float("nan"), count=True) == "nan"  # a missing count is not a zero
    assert html.fmt(True) == "True" and html.fmt(np.int64(3)) == "3"


def _luminance(rgb) -> float:
    r, g, b = to_rgb(rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def test_every_count_on_the_confusion_matrix_has_contrast():
    cm = np.array([[4933, 488], [612, 1101]])
    fig, ax = plt.subplots()
    image = ax.imshow(cm, cmap="Blues")
    html.annotate_counts(ax, cm)
    for t in ax.texts:
        i, j = next((i, j) for (i, j), v in np.ndenumerate(cm) if f"{v:,}" == t.get_text())
        cell = image.cmap(image.norm(cm[i, j]))
        text, back = _luminance(t.get_color()), _luminance(cell[:3])
        lighter, darker = max(text, back) + 0.05, min(text, back) + 0.05
        assert lighter / darker > 3.0, (t.get_text(), t.get_color())  # WCAG large-text ratio
    plt.close(fig)


def test_the_legend_sits_beside_the_bars():
    fig, ax = plt.subplots(figsize=(7, 2))
    ax.barh([0, 1], [0.9, 0.95], label="observed")
    html.legend_outside(ax)
    fig.canvas.draw()
    legend = ax.get_legend().get_window_extent()
    assert legend.x0 >= ax.get_window_extent().x1  # right of the axes: covers no bar
    plt.close(fig)
