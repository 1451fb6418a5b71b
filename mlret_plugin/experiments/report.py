"""Experiment outputs: results.jsonl, report.md tables and PNG plots (matplotlib, Agg backend).

Attention rows are ``run_lareqa`` rows plus ``variant``, ``noise``, ``pool_size``; ``add_degradation``
gives every non-dense row ``dense_value``, ``delta = value - dense_value`` and ``relative = delta /
dense_value`` against the dense row of the same cell coordinates (noise, pool, setting, language,
measure). For AP / R@k a negative delta is a loss; for MaxRankDist (lower is better) a positive one.
Ratio rows carry ``model``, ``layers``, ``params``, ``alpha``, ``steps`` instead, and ``delta`` against the
baseline alpha. Values are means over training seeds (``std``, ``seeds``); summary rows carry the paired
tests of ``experiments.significance`` (``p_value``, ``p_holm``, ``ci_low``, ``ci_high``, ``n_queries``), and
tables mark a Holm-significant Δ with ``*``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from mlret_plugin.atomic import atomic_write_text
from mlret_plugin.constants import SETTINGS
from mlret_plugin.evaluation.paired import mark, tests_section
from mlret_plugin.evaluation.report import save_figure, write_results_jsonl
from mlret_plugin.tables import markdown_table
_MATCH = ("noise", "mixed_noise", "pool_size", "dataset", "setting", "measure", "breakdown", "qlang", "dlang")


def add_degradation(rows: list[dict]) -> list[dict]:
    """Rows with ``dense_value`` / ``delta`` / ``relative`` filled in for every non-dense variant."""
    dense = {tuple(r.get(k) for k in _MATCH): r["value"] for r in rows if r["variant"] == "dense"}
    out = []
    for r in rows:
        r = dict(r)
        ref = dense.get(tuple(r.get(k) for k in _MATCH))
        if r["variant"] != "dense" and ref is not None:
            r["dense_value"] = ref
            r["delta"] = r["value"] - ref
            r["relative"] = (r["value"] - ref) / ref if ref else None
        out.append(r)
    return out


def _fmt(x, digits: int = 4) -> str:
    if x is None:
        return "-"
    return f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:+.1f}%"


def _noise(r: dict) -> tuple[float, bool]:
    return r["noise"], bool(r.get("mixed_noise"))


def _noise_label(noise: tuple[float, bool]) -> str:
    return f"{noise[0]:.2f}" + (" mixed" if noise[1] else "")


def _summary(rows: list[dict]) -> dict[tuple, dict]:
    """(variant, (noise, mixed), pool_size, setting, measure) -> summary row."""
    return {(r["variant"], _noise(r), r["pool_size"], r["setting"], r["measure"]): r
            for r in rows if r.get("breakdown") == "summary"}


def _value(r: dict | None, digits: int = 4) -> str:
    """The mean, with ± std when it is over several seeds."""
    if r is None:
        return "-"
    if r.get("n_seeds", 1) > 1:
        return f"{r['value']:.{digits}f} ± {r['std']:.{digits}f}"
    return _fmt(r["value"], digits)


def attention_tables(rows: list[dict], measure: str = "AP") -> str:
    summary = _summary(rows)
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    noises = sorted({_noise(r) for r in rows})
    pools = sorted({r["pool_size"] for r in rows})
    header = ["variant", "noise", "pool"] + [f"{s.capitalize()} {measure}" for s in SETTINGS] + ["MaxRankDist"] + \
             [f"Δ{s.capitalize()} (abs / rel)" for s in SETTINGS] + ["ΔMaxRankDist"]
    body = []
    for v in variants:
        for n in noises:
            for p in pools:
                cells = [summary.get((v, n, p, s, measure)) for s in SETTINGS]
                mrd = summary.get((v, n, p, "multi", "MaxRankDist"))
                if not any(cells):
                    continue
                line = [v, _noise_label(n), str(p)] + [_value(c) for c in cells]
                line.append(_value(mrd, 1))
                for c in cells:
                    line.append(f"{_fmt(c['delta'])}{mark(c)} / {_pct(c.get('relative'))}" if c and "delta" in c else "-")
                line.append(f"{_fmt(mrd['delta'], 1)}{mark(mrd)}" if mrd and "delta" in mrd else "-")
                body.append(line)
    return markdown_table(header, body)


def _attention_name(r: dict) -> str:
    return f"{r['variant']} (noise {_noise_label(_noise(r))}, pool {r['pool_size']})"


def per_language_table(rows: list[dict], measure: str = "AP") -> str:
    """Mono AP per language and Multi AP per query language, with Δ vs dense, at the largest pool."""
    pool = max(r["pool_size"] for r in rows)
    picked = [r for r in rows if r["pool_size"] == pool and r["measure"] == measure
              and r.get("breakdown") in ("language", "query_lang")]
    langs = sorted({r["qlang"] for r in picked})
    header = ["variant", "noise", "setting"] + langs
    body = []
    keyed = {(r["variant"], _noise(r), r["setting"], r["qlang"]): r for r in picked}
    for v in dict.fromkeys(r["variant"] for r in picked):
        for n in sorted({_noise(r) for r in picked}):
            for setting in ("mono", "multi"):
                line = [v, _noise_label(n), setting]
                for lang in langs:
                    r = keyed.get((v, n, setting, lang))
                    if r is None:
                        line.append("-")
                    elif "delta" in r:
                        line.append(f"{r['value']:.3f} ({r['delta']:+.3f})")
                    else:
                        line.append(f"{r['value']:.3f}")
                body.append(line)
    return f"Pool of {pool} languages; cells: {measure} (Δ vs dense).\n\n" + markdown_table(header, body)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_vs(rows: list[dict], x: str, fixed: str, path: Path, measure: str = "AP") -> Path | None:
    """Δ``measure`` vs dense against ``x`` ('noise' or 'pool_size'), one line per variant and value of
    ``fixed`` (the other axis), one panel per setting."""
    summary = [r for r in rows if r.get("breakdown") == "summary" and r["measure"] == measure and "delta" in r]
    if not summary:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), sharey=True)
    for ax, setting in zip(axes, SETTINGS):
        lines: dict[tuple, list[tuple[float, float]]] = {}
        for r in summary:
            if r["setting"] == setting:
                lines.setdefault((r["variant"], r[fixed], bool(r.get("mixed_noise"))), []).append((r[x], r["delta"]))
        for (variant, f, mixed), points in sorted(lines.items()):
            points.sort()
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o",
                    label=f"{variant} ({'noise' if fixed == 'noise' else 'pool'} {f:g}{', mixed' if mixed else ''})")
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xticks(sorted({r[x] for r in summary}))
        ax.set_title(f"{setting.capitalize()}")
        ax.set_xlabel("noise level (distractor / original tokens)" if x == "noise" else "pool size (languages)")
    axes[0].set_ylabel(f"Δ{measure} vs dense")
    axes[-1].legend(fontsize=7, loc="best")
    return save_figure(fig, path)


def write_attention_outputs(rows: list[dict], out_dir: Path, header: str) -> dict[str, Path]:
    out_dir = Path(out_dir)
    paths = {"results": write_results_jsonl(rows, out_dir / "results.jsonl")}
    for x, fixed in (("noise", "pool_size"), ("pool_size", "noise")):
        p = plot_vs(rows, x, fixed, out_dir / f"degradation_vs_{'noise' if x == 'noise' else 'pool_size'}.png")
        if p is not None:
            paths[p.stem] = p
    plots = "".join(f"![{p.stem}]({p.name})\n\n" for k, p in paths.items() if k != "results")
    text = (f"{header}\n\n## Summary (mAP over the full ranking; Δ vs dense at the same noise and pool)\n\n"
            f"{attention_tables(rows)}\n\n{tests_section(rows, _attention_name)}\n\n"
            f"## Per language\n\n{per_language_table(rows)}\n\n{plots}")
    paths["report"] = atomic_write_text(out_dir / "report.md", text)
    return paths


# --- ratio ----------------------------------------------------------------------------------------------------

def add_baseline_delta(rows: list[dict], baseline: float | None) -> list[dict]:
    """Ratio rows with ``baseline_value`` / ``delta`` against the same model's baseline alpha (same evaluation,
    setting, language, measure)."""
    key = ("model", "eval", "dataset", "setting", "measure", "breakdown", "qlang", "dlang")
    ref = {tuple(r.get(k) for k in key): r["value"] for r in rows if r.get("alpha") == baseline}
    out = []
    for r in rows:
        r = dict(r)
        value = ref.get(tuple(r.get(k) for k in key))
        if r.get("alpha") != baseline and value is not None:
            r["baseline_value"] = value
            r["delta"] = r["value"] - value
        out.append(r)
    return out


def ratio_table(rows: list[dict], measure: str = "AP", eval_name: str | None = None) -> str:
    rows = [r for r in rows if r.get("eval") == eval_name]
    summary = {(r["model"], r["alpha"], r["setting"], r["measure"]): r for r in rows if r.get("breakdown") == "summary"}
    models = list(dict.fromkeys(r["model"] for r in rows))
    params = {r["model"]: r.get("params") for r in rows}
    alphas = sorted({r["alpha"] for r in rows}, key=lambda a: (a is not None, a if a is not None else -1))
    header = ["model", "params", "alpha", "seeds"] + [f"{s.capitalize()} {measure}" for s in SETTINGS] + ["MaxRankDist"] + \
             [f"Δ{s.capitalize()}" for s in SETTINGS] + ["ΔMaxRankDist"]
    body = []
    for m in models:
        for a in alphas:
            cells = [summary.get((m, a, s, measure)) for s in SETTINGS]
            if not any(cells):
                continue
            mrd = summary.get((m, a, "multi", "MaxRankDist"))
            n_seeds = max((c.get("n_seeds", 1) for c in cells if c), default=1)
            deltas = [f"{_fmt(c['delta'])}{mark(c)}" if c and "delta" in c else "-" for c in cells]
            deltas.append(f"{_fmt(mrd['delta'], 1)}{mark(mrd)}" if mrd and "delta" in mrd else "-")
            body.append([m, f"{params[m] / 1e6:.1f}M" if params.get(m) else "-", "untrained" if a is None else _fmt(a, 2),
                         "-" if a is None else str(n_seeds)]
                        + [_value(c) for c in cells] + [_value(mrd, 1)] + deltas)
    return markdown_table(header, body)


def plot_ratio(rows: list[dict], path: Path, measure: str = "AP", eval_name: str | None = None) -> Path | None:
    summary = [r for r in rows if r.get("breakdown") == "summary" and r["measure"] == measure and r.get("alpha") is not None
               and r.get("eval") == eval_name]
    if not summary:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, setting in zip(axes, SETTINGS):
        lines: dict[str, list[tuple[float, float, float]]] = {}
        for r in summary:
            if r["setting"] == setting:
                lines.setdefault(r["model"], []).append((r["alpha"], r["value"], r.get("std") or 0.0))
        for model, points in lines.items():
            points.sort()
            ax.errorbar([p[0] for p in points], [p[1] for p in points], yerr=[p[2] for p in points], marker="o",
                        capsize=3, label=model)
        ax.set_xticks(sorted({r["alpha"] for r in summary}))
        ax.set_title(setting.capitalize())
        ax.set_xlabel("alpha (share of monolingual X-X batches)")
    axes[0].set_ylabel(f"m{measure} (mean ± std over seeds)")
    axes[-1].legend(fontsize=7, loc="best")
    return save_figure(fig, path)


def _ratio_name(r: dict) -> str:
    return f"{r['model']} {'untrained' if r['alpha'] is None else 'alpha ' + format(r['alpha'], 'g')}"


def write_ratio_outputs(rows: list[dict], out_dir: Path, header: str) -> dict[str, Path]:
    out_dir = Path(out_dir)
    paths = {"results": write_results_jsonl(rows, out_dir / "results.jsonl")}
    evals = list(dict.fromkeys(r.get("eval") for r in rows))
    sections = []
    for i, eval_name in enumerate(evals):
        name = "map_vs_alpha" if i == 0 else f"map_vs_alpha_{i}"
        p = plot_ratio(rows, out_dir / f"{name}.png", eval_name=eval_name)
        plot = ""
        if p is not None:
            paths[name] = p
            plot = f"\n\n![{name}]({p.name})"
        title = f" on {eval_name}" if eval_name else ""
        sections.append(f"## mAP over the full ranking by model size and alpha{title}\n\n"
                        f"{ratio_table(rows, eval_name=eval_name)}{plot}")
    text = f"{header}\n\n" + "\n\n".join(sections) + f"\n\n{tests_section(rows, _ratio_name)}\n"
    paths["report"] = atomic_write_text(out_dir / "report.md", text)
    return paths


def rows_of(cells: Iterable[dict]) -> list[dict]:
    return [row for cell in cells for row in cell["rows"]]
