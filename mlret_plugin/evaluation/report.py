"""Outputs of an evaluation: results.jsonl, report.md (markdown tables), PNG heatmaps (matplotlib Agg)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from mlret_plugin.atomic import atomic_path, atomic_write_text
from mlret_plugin.constants import SETTING_TITLES
from mlret_plugin.tables import markdown_table


def write_results_jsonl(rows: Iterable[dict], path: Path) -> Path:
    return atomic_write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def read_results_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def _fmt(value: float, measure: str) -> str:
    if value != value:
        return "n/a"
    return f"{value:.1f}" if measure == "MaxRankDist" else f"{value:.4f}"


def _systems(rows: list[dict]) -> list[str]:
    return list(dict.fromkeys(r["system"] for r in rows))


def _measures(rows: list[dict]) -> list[str]:
    return list(dict.fromkeys(r["measure"] for r in rows))


def lareqa_summary_table(rows: list[dict]) -> str:
    """One line per system: Mono / Cross / Multi x measures (MaxRankDist for Multi only)."""
    summary = [r for r in rows if r["breakdown"] == "summary"]
    columns = [(s, m) for s in ("mono", "cross", "multi") for m in _measures(summary)
               if any(r["setting"] == s and r["measure"] == m for r in summary)]
    header = ["system"] + [f"{SETTING_TITLES[s]} {'mAP' if m == 'AP' else m}" for s, m in columns]
    body = []
    for system in _systems(summary):
        values = {(r["setting"], r["measure"]): r["value"] for r in summary if r["system"] == system}
        body.append([system] + [_fmt(values[c], c[1]) if c in values else "" for c in columns])
    return markdown_table(header, body)


def _language_table(rows: list[dict], system: str) -> str:
    mono = [r for r in rows if r["system"] == system and r["breakdown"] == "language"]
    pool = [r for r in rows if r["system"] == system and r["breakdown"] == "query_lang"]
    langs = list(dict.fromkeys(r["qlang"] for r in mono + pool))
    columns = [("language", m) for m in _measures(mono)] + [("query_lang", m) for m in _measures(pool)]
    header = ["lang"] + [f"{'Mono' if b == 'language' else 'Multi'} {'mAP' if m == 'AP' else m}" for b, m in columns]
    body = []
    for lang in langs:
        values = {(r["breakdown"], r["measure"]): r["value"] for r in mono + pool if r["qlang"] == lang}
        body.append([lang] + [_fmt(values[c], c[1]) if c in values else "" for c in columns])
    return markdown_table(header, body)


def cross_matrix(rows: list[dict], system: str, measure: str = "AP") -> tuple[list[str], list[list[float]]]:
    """(langs, matrix[q][d]) from mono (diagonal) and cross (off-diagonal) rows; NaN where missing."""
    cells = {(r["qlang"], r["dlang"]): r["value"] for r in rows
             if r["system"] == system and r["measure"] == measure and r["breakdown"] in ("language", "pair")}
    langs = list(dict.fromkeys(q for q, _ in cells))
    return langs, [[cells.get((q, d), float("nan")) for d in langs] for q in langs]


def _matrix_table(rows: list[dict], system: str, measure: str = "AP") -> str:
    langs, matrix = cross_matrix(rows, system, measure)
    body = [[q] + [_fmt(v, measure) for v in line] for q, line in zip(langs, matrix)]
    return markdown_table(["q \\ d"] + langs, body)


def heatmap(rows: list[dict], system: str, path: Path, measure: str = "AP") -> Path | None:
    """PNG heatmap of the cross-lingual matrix (query language x candidate language)."""
    langs, matrix = cross_matrix(rows, system, measure)
    if len(langs) < 2:
        return None
    return matrix_png(matrix, langs, langs, path, title=f"{system}: {'mAP' if measure == 'AP' else measure}",
                      xlabel="candidate language", ylabel="query language")


CELL_INCHES = 0.62  # one matrix cell: room for a 3-digit value at VALUE_POINTS
VALUE_POINTS = 8  # cell values: legible at 11 x 11 languages
TITLE_POINTS = 10


def matrix_figure(matrix: list[list[float]], row_labels: list[str], col_labels: list[str], title: str,
                  xlabel: str, ylabel: str | None = None, annotate: bool = True):
    """A viridis heatmap of ``matrix`` (NaN = empty cell) with values written in. The figure is sized from its
    content (cells, label lengths, title) so nothing is clipped: a title too long for the width wraps."""
    import textwrap

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    data = np.array(matrix, dtype=float)
    n_rows, n_cols = data.shape
    label_inches = 0.09 * max((len(str(x)) for x in row_labels), default=1)  # ~0.09 in per character at 9 pt
    width = max(4.0, 1.3 + label_inches + CELL_INCHES * n_cols + 0.9)  # y labels, cells, colour bar
    chars_per_line = max(24, int((width - 0.4) * 72 / (0.6 * TITLE_POINTS)))  # ~0.6 em per character
    wrapped = textwrap.fill(title, chars_per_line)
    height = max(3.0, 1.2 + 0.45 * (wrapped.count("\n") + 1) + CELL_INCHES * 0.85 * n_rows)
    fig, ax = plt.subplots(figsize=(width, height), layout="constrained")
    peak = max(1e-9, float(np.nanmax(data))) if np.isfinite(data).any() else 1.0
    image = ax.imshow(data, cmap="viridis", vmin=0, vmax=peak, aspect="auto")
    ax.set_xticks(range(n_cols), col_labels, fontsize=9)
    ax.set_yticks(range(n_rows), row_labels, fontsize=9)
    ax.set_xlabel(xlabel, fontsize=9)
    if ylabel:
        ax.set_ylabel(ylabel, fontsize=9)
    ax.set_title(wrapped, fontsize=TITLE_POINTS)
    if annotate:
        for i in range(n_rows):
            for j in range(n_cols):
                if data[i, j] == data[i, j]:
                    ax.text(j, i, f"{data[i, j]:.2f}", ha="center", va="center", fontsize=VALUE_POINTS,
                            color="white" if data[i, j] < 0.6 * peak else "black")
    fig.colorbar(image, ax=ax, fraction=0.05, pad=0.02)
    return fig


def matrix_png(matrix: list[list[float]], row_labels: list[str], col_labels: list[str], path: Path, title: str,
               xlabel: str, ylabel: str | None = None, annotate: bool = True) -> Path:
    """``matrix_figure`` saved atomically as PNG (150 dpi)."""
    fig = matrix_figure(matrix, row_labels, col_labels, title, xlabel, ylabel, annotate)
    return save_figure(fig, path, dpi=150)


def save_figure(fig, path: Path, dpi: int = 110) -> Path:
    """Save a matplotlib figure as PNG atomically (a hidden temporary file, then rename) and close it."""
    import matplotlib.pyplot as plt

    if fig.get_layout_engine() is None:
        fig.tight_layout()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi, format="png")
    finally:
        plt.close(fig)
    return path


SYSTEM_FIELDS = ("candidates", "query_prompt", "query_prompt_source", "passage_prompt", "passage_prompt_source",
                 "backend", "precision")


def system_settings(systems: list) -> dict[str, dict]:
    """{name: settings} of the dense systems (``describe()``: prompts, candidate mode) among ``systems``."""
    return {s.name: s.describe() for s in systems if hasattr(s, "describe")}


def annotate_systems(rows: list[dict], systems: dict[str, dict] | None) -> list[dict]:
    """Add each system's settings (``DenseRetriever.describe()``: prompts, candidates) to its rows, in place."""
    for row in rows:
        row.update((systems or {}).get(row["system"], {}))
    return rows


def systems_table(rows: list[dict]) -> str | None:
    """Prompts and candidate mode of the systems whose rows carry them (dense models), else None."""
    described = {}
    for row in rows:
        if "query_prompt" in row:
            described.setdefault(row["system"], row)
    if not described:
        return None

    def prompt(row, side):
        text, source = row.get(f"{side}_prompt", ""), row.get(f"{side}_prompt_source", "")
        shown = f"`{text!r}`" if text else "none"
        return f"{shown} ({source.replace('model:', 'model prompt ')})" if source and source != "none" else shown

    body = [[name, row.get("candidates", ""), prompt(row, "query"), prompt(row, "passage"),
             f"{row.get('backend', 'torch')} {row.get('precision', 'fp32')}"] for name, row in described.items()]
    return markdown_table(["system", "candidates", "query prompt", "passage prompt", "backend"], body)


def lareqa_markdown(rows: list[dict], collection: str, langs: Iterable[str], timings: dict | None = None,
                    heatmaps: dict | None = None, note: str | None = None) -> str:
    parts = [
        f"# LAReQA evaluation: {collection} ({', '.join(langs)})", "",
        *([note, ""] if note else []),
        "mAP: average precision over the complete ranking (dense: exact full depth; BM25: its returned list). "
        "Mono = mean over languages, Cross = mean over ordered pairs, Multi = the pool. MaxRankDist: "
        "pool only, mean per query language then over languages; lower is better (for BM25 a relevant candidate "
        "it did not return counts at rank depth+1, a lower bound).", "",
        lareqa_summary_table(rows), "",
    ]
    if timings:
        parts += ["Wall time: " + ", ".join(f"{s} {t:.1f} s" for s, t in timings.items()), ""]
    systems = systems_table(rows)
    if systems:
        parts += ["Dense models' inputs:", "", systems, ""]
    tested = [r for r in rows if r.get("p_value") is not None]
    if tested:
        from mlret_plugin.evaluation.paired import method_note, tests_table

        parts += [f"## Paired tests: each system vs {tested[0]['baseline']}", "",
                  "Δ = system - baseline on the same queries (AP: positive favours the system; MaxRankDist: negative "
                  "does). " + method_note(len(tested), seeds=False), "",
                  tests_table(rows, lambda r: r["system"]), ""]
    for system in _systems(rows):
        parts += [f"## {system}", "", "### Per language", "", _language_table(rows, system), ""]
        if any(r["breakdown"] == "pair" and r["system"] == system for r in rows):
            parts += ["### mAP by query language (rows) x candidate language (columns)", "",
                      _matrix_table(rows, system), ""]
        if heatmaps and heatmaps.get(system):
            parts += [f"![{system} cross-lingual mAP]({heatmaps[system]})", ""]
    return "\n".join(parts)


def write_lareqa_outputs(rows: list[dict], out_dir: Path, collection: str, langs: Iterable[str],
                         timings: dict | None = None, note: str | None = None,
                         systems: dict[str, dict] | None = None) -> dict[str, Path]:
    """``systems``: {system name: settings} added to its rows (results.jsonl) and shown in the report."""
    from mlret_plugin.evaluation.runs import safe_name

    out_dir = Path(out_dir)
    annotate_systems(rows, systems)
    written = {"results": write_results_jsonl(rows, out_dir / "results.jsonl")}
    heatmaps = {}
    for system in _systems(rows):
        png = heatmap(rows, system, out_dir / f"heatmap.{safe_name(system)}.png")
        if png is not None:
            heatmaps[system] = png.name
            written[f"heatmap:{system}"] = png
    written["report"] = atomic_write_text(out_dir / "report.md", lareqa_markdown(rows, collection, langs, timings, heatmaps, note))
    return written


def evaluate_table(rows: list[dict]) -> str:
    """`mlret evaluate`: one line per (dataset, system), one column per measure."""
    measures = _measures(rows)
    keys = list(dict.fromkeys((r["dataset"], r["system"]) for r in rows))
    body = []
    for dataset, system in keys:
        values = {r["measure"]: r["value"] for r in rows if (r["dataset"], r["system"]) == (dataset, system)}
        body.append([dataset, system] + [_fmt(values[m], m) if m in values else "" for m in measures])
    return markdown_table(["dataset", "system"] + measures, body)


def write_evaluate_outputs(rows: list[dict], out_dir: Path) -> dict[str, Path]:
    out_dir = Path(out_dir)
    systems = systems_table(rows)
    report = "# Evaluation\n\n" + evaluate_table(rows) + "\n" + (f"\nDense models' inputs:\n\n{systems}\n" if systems else "")
    return {
        "results": write_results_jsonl(rows, out_dir / "results.jsonl"),
        "report": atomic_write_text(out_dir / "report.md", report),
    }
