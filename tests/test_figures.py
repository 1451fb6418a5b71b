"""Report figures stay legible: titles, labels and cell values fit inside the figure at 11 x 11 languages."""
from __future__ import annotations

import pytest

LANGS = ["ar", "de", "el", "en", "es", "hi", "ru", "th", "tr", "vi", "zh"]
LONG_NAME = "multilingual-e5-small-q4-offline-sentence: mAP"


def _extents(fig):
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    texts = [t for ax in fig.axes for t in (ax.title, ax.xaxis.label, ax.yaxis.label, *ax.get_xticklabels(),
                                              *ax.get_yticklabels(), *ax.texts) if t.get_text()]
    return fig.bbox, [(t, t.get_window_extent(renderer)) for t in texts]


@pytest.mark.parametrize("n", [2, 11])
def test_heatmap_title_labels_and_values_fit(n):
    import matplotlib.pyplot as plt

    from mlret_plugin.evaluation.report import VALUE_POINTS, matrix_figure

    matrix = [[0.1 + 0.8 * ((i * n + j) % 7) / 7 for j in range(n)] for i in range(n)]
    fig = matrix_figure(matrix, LANGS[:n], LANGS[:n], title=LONG_NAME, xlabel="candidate language",
                        ylabel="query language")
    try:
        box, extents = _extents(fig)
        clipped = [t.get_text() for t, e in extents
                   if e.x0 < box.x0 - 0.5 or e.x1 > box.x1 + 0.5 or e.y0 < box.y0 - 0.5 or e.y1 > box.y1 + 0.5]
        assert not clipped, f"text outside the figure: {clipped}"
        title = fig.axes[0].title.get_text().replace("\n", " ")
        assert title == LONG_NAME  # wrapped, never cut
        values = fig.axes[0].texts
        assert len(values) == n * n and all(t.get_fontsize() >= VALUE_POINTS for t in values)
        # neighbouring values do not overlap: each fits its cell
        renderer = fig.canvas.get_renderer()
        cell_width = (fig.axes[0].get_window_extent(renderer).width / n)
        assert max(t.get_window_extent(renderer).width for t in values) < cell_width
        assert fig.get_size_inches()[0] * 150 >= 600  # saved at 150 dpi: at least 600 px wide
    finally:
        plt.close(fig)


def test_heatmap_png_is_written_atomically(tmp_path):
    from mlret_plugin.evaluation.report import matrix_png

    path = matrix_png([[0.5, 0.2], [0.1, 0.9]], ["en", "de"], ["en", "de"], tmp_path / "h.png", title=LONG_NAME,
                      xlabel="candidate language")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and sorted(p.name for p in tmp_path.iterdir()) == ["h.png"]
