"""Is an encoding backend faithful to torch fp32? The main job's LAReQA table, every variant against torch fp32.

offline-e5 (multilingual-e5-small) on a whole collection, context candidates (the main job's), full-depth mAP:
one ``run_lareqa`` with torch fp32 first and every other backend x precision after it, so each variant's Mono /
Cross / Multi AP and pool MaxRankDist get the project's paired test against fp32 (sign-flip over source
questions, bootstrap CI, Holm across all tests of the report). A variant is *faithful* when every Mono / Cross
/ Multi mAP is within 0.002 of fp32 with no significant difference, and MaxRankDist within 1%.

Embeddings come from the embedding cache when a run has put them there (``mlret lareqa ... --backend B
--precision P`` with the same cache), so the main job's timing runs and this comparison encode once.

    python benchmarks/faithfulness.py --collection xquad-r --out mlret-out/faithfulness/xquad-r
    python benchmarks/faithfulness.py --collection mlqa-r --variants openvino:bf16,torch:bf16 --out ...
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

VARIANTS = "torch:bf16,onnx:fp32,onnx:int8,openvino:fp32,openvino:bf16"
TESTED = (("mono", "AP"), ("cross", "AP"), ("multi", "AP"), ("multi", "MaxRankDist"))


def verdict(rows: list[dict], system: str, reference: str) -> dict:
    """Δ per tested setting, and whether the variant is faithful (the rule in the module doc)."""
    summary = {(r["system"], r["setting"], r["measure"]): r for r in rows if r["breakdown"] == "summary"}
    out, faithful = {}, True
    for setting, measure in TESTED:
        row, ref = summary[(system, setting, measure)], summary[(reference, setting, measure)]
        delta = row["value"] - ref["value"]
        significant = row.get("p_holm") is not None and row["p_holm"] < 0.05
        if measure == "AP":
            ok = abs(delta) <= 0.002 and not significant
        else:
            ok = abs(delta) <= 0.01 * ref["value"]
        faithful &= ok
        out[f"{setting} {measure}"] = {"delta": delta, "p_holm": row.get("p_holm"), "ok": ok,
                                       "ci": (row.get("ci_low"), row.get("ci_high"))}
    out["faithful"] = faithful
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--collection", choices=("xquad-r", "mlqa-r"), default="xquad-r")
    parser.add_argument("--model", default="offline-e5")
    parser.add_argument("--variants", default=VARIANTS, help=f"BACKEND:PRECISION,... besides torch fp32 (default {VARIANTS})")
    parser.add_argument("--candidates", choices=("context", "sentence"), default="context")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    from mlret_plugin.atomic import atomic_write_text
    from mlret_plugin.cli.main import setup_logging
    from mlret_plugin.evaluation.lareqa import run_lareqa
    from mlret_plugin.evaluation.systems import build_systems, close_systems

    setup_logging()
    variants = [("torch", "fp32")] + [tuple(v.split(":")) for v in args.variants.split(",") if v]
    systems = []
    for backend, precision in variants:
        systems += build_systems([args.model], candidates=args.candidates, backend=backend, precision=precision)
    start = time.perf_counter()
    try:
        rows = run_lareqa(args.collection, systems, out_dir=args.out, baseline=systems[0].name)
    finally:
        close_systems(systems)
    reference = systems[0].name
    lines = [f"# Faithfulness to torch fp32: {args.model} on {args.collection} ({args.candidates} candidates)", "",
             "Δ = variant - torch fp32 on the same queries; `*` = Holm p < 0.05 over every test of the report. Faithful: "
             "every mAP within 0.002 and not significantly different, MaxRankDist within 1%.", "",
             "| backend | precision | ΔMono mAP | ΔCross mAP | ΔMulti mAP | ΔMaxRankDist | faithful |",
             "|---|---|---|---|---|---|---|"]
    verdicts = {}
    for system, (backend, precision) in zip(systems[1:], variants[1:]):
        v = verdicts[system.name] = verdict(rows, system.name, reference)

        def cell(key, digits=4):
            d = v[key]
            star = "*" if d["p_holm"] is not None and d["p_holm"] < 0.05 else ""
            return f"{d['delta']:+.{digits}f}{star} [{d['ci'][0]:+.{digits}f}, {d['ci'][1]:+.{digits}f}]"

        lines.append(f"| {backend} | {precision} | {cell('mono AP')} | {cell('cross AP')} | {cell('multi AP')} | "
                     f"{cell('multi MaxRankDist', 1)} | {'yes' if v['faithful'] else 'no'} |")
    lines += ["", f"Wall time {time.perf_counter() - start:.0f} s (encoding of the variants not in the embedding "
                  "cache yet included)."]
    text = "\n".join(lines)
    atomic_write_text(args.out / "faithfulness.md", text + "\n")
    atomic_write_text(args.out / "faithfulness.json", json.dumps(verdicts, indent=1))
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
