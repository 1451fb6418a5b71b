"""A hybrid training recipe for offline-e5, chosen on held-out MLQA-R, tested zero-shot on XQuAD-R.

MLQA-R is split by article (``training.splits.article_split``, seed 0): train 346 articles (688 source
questions), dev 90 (230), test 84 (230, 20%). Dev and test never reach training.

1. Search (parts ``search-*``, ``--out OUT/hybrid-recipe/search``): alpha 0.5, training seed 0, each recipe
   trained on MLQA-R train and evaluated on MLQA-R **dev only** (``--eval none --split dev``): the dev
   questions against every MLQA-R candidate, sentence candidates. XQuAD-R is never looked at while choosing.
   Every part differs from ``search-b64`` in one knob, so each knob's effect is read off the dev table.
2. Final grid (parts ``final-*``, ``--out OUT/hybrid-recipe/final``): the chosen recipe (``FINAL``), alpha 0 /
   0.5 / 1 x training seeds 0 / 1 / 2, evaluated zero-shot on the whole XQuAD-R pool (11 languages, sentence
   candidates, full depth) and on MLQA-R test; every alpha tested against hybrid (0.5), and the untrained
   model in ``final-untrained``. The short recipe of docs/research.md ("The paper's claim") is the contrast.

Training runs in bf16 (the Trainer's own mixed precision) and evaluation in torch bf16 (autocast), both
measured faithful enough on this CPU (docs/encoding.md, docs/training.md). Minutes (``--list``) are wall times
on 2 CPU cores: measured for the parts that have run (docs/training.md), estimated for the others.

    python examples/e5_hybrid_recipe.py --list
    python examples/e5_hybrid_recipe.py --part search-untrained --part search-b64
    python examples/e5_hybrid_recipe.py --summary        # the dev table of every search part run so far
    python examples/e5_hybrid_recipe.py --smoke          # the whole pipeline on a tiny budget (< 5 minutes)
    python examples/e5_hybrid_recipe.py --final          # the final grid's table

The final grid takes longer than one machine may live, so its finished cells are kept in the repository
(``docs/results/hybrid-recipe-final``, ``experiments.archive``): ``--restore`` puts them into OUT before more
final parts run, ``--archive`` adds the new ones after.
"""
from __future__ import annotations

import json
import operator
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

from e5_parts import Part, run_parts  # noqa: E402

from mlret_plugin.evaluation.paired import mark  # noqa: E402
from mlret_plugin.training.recipe import HYBRID_RECIPE, recipe_flags  # noqa: E402

BASE = ("ratio", "--train", "mlqa-r", "--candidates", "sentence", "--precision", "bf16", "--bf16")
# the untrained cell is shared by every search part (cached after the first), so each report tests against it
SEARCH = (*BASE, "--eval", "none", "--split", "dev", "--alphas", "0.5", "--seeds", "0", "--baseline", "untrained")
B64 = ("--batch-size", "64", "--loss", "cached-mnrl", "--mini-batch-size", "32", "--max-steps", "100",
       "--learning-rate", "2e-5")
RECIPES = {  # part -> (recipe arguments, minutes: measured where the part has run; else estimated)
    "short": (("--batch-size", "16", "--max-steps", "100", "--learning-rate", "2e-5"), "6"),
    "b64": (B64, "20"),
    "b128": (("--batch-size", "128", "--loss", "cached-mnrl", "--mini-batch-size", "32", "--max-steps", "60",
              "--learning-rate", "2e-5"), "25"),
    "b64-lr5e-5": ((*B64[:-2], "--learning-rate", "5e-5"), "20"),
    "b64-steps200": ((*B64[:6], "--max-steps", "200", *B64[8:]), "30"),
    "b64-hard-negatives": ((*B64, "--hard-negatives"), "25"),
    "b64-frozen-embeddings": ((*B64, "--freeze-embeddings"), "20"),
    "b64-distill": ((*B64, "--distill-weight", "5"), "25"),
    "b64-wise": ((*B64, "--wise-weights", "1,0.75,0.5,0.25"), "27"),
    "b64-scale100": ((*B64, "--scale", "100"), "20"),  # e5's own temperature, 0.01
    "b64-scale100-wise": ((*B64, "--scale", "100", "--wise-weights", "1,0.75"), "24"),  # WiSE on the best so far
}
FINAL = recipe_flags(HYBRID_RECIPE)  # chosen from the search: mlret train's defaults too (training.recipe)
# one alpha and seed per part, all in one --out: each tested against hybrid (0.5) and against the untrained model
FINAL_COMMON = (*BASE, "--eval", "xquad-r", "--split", "test", "--baseline", "0.5", "--test-untrained", *FINAL)

PARTS = [Part("search-untrained", "hybrid-recipe/search",
              (*BASE, "--eval", "none", "--split", "dev", "--alphas", "0.5", "--models", "{model}", "--only-untrained"),
              "5", model_flag="--models")]
PARTS += [Part(f"search-{name}", "hybrid-recipe/search", (*SEARCH, *args, "--models", "{model}"), minutes,
               model_flag="--models") for name, (args, minutes) in RECIPES.items()]
PARTS += [Part("final-untrained", "hybrid-recipe/final",
               (*FINAL_COMMON, "--alphas", "0,0.5,1", "--models", "{model}", "--only-untrained"), "5-12",
               model_flag="--models")]
PARTS += [Part(f"final-a{alpha}-s{seed}", "hybrid-recipe/final",
               (*FINAL_COMMON, "--alphas", alpha, "--seeds", str(seed), "--no-untrained", "--models", "{model}"),
               "23-38", model_flag="--models")  # 20-23 on the first machine, 36-38 on a slower one (docs/training.md)
          for alpha in ("0", "0.5", "1") for seed in (0, 1, 2)]

# The whole pipeline on a tiny budget: the first layer of the model, 2 steps of 8 pairs, a search on dev (two
# recipes, one at two WiSE-FT weights), one training per alpha evaluated on XQuAD-R and MLQA-R test (alpha 0.5
# first, then 0 and 1 in a second command, as the final parts split it); every evaluation over de + es only (the
# two smallest languages both collections have); the real parts' outputs.
TINY = ("--batch-size", "8", "--loss", "cached-mnrl", "--mini-batch-size", "4", "--max-steps", "2",
        "--eval-langs", "de,es")
SMOKE = [Part("smoke-search-short", "hybrid-recipe-smoke/search",
              (*SEARCH, *TINY, "--wise-weights", "1,0.5", "--models", "{model}:layers=1"), "1", model_flag="--models"),
         Part("smoke-search-frozen", "hybrid-recipe-smoke/search",
              (*SEARCH, *TINY, "--freeze-embeddings", "--models", "{model}:layers=1"), "1", model_flag="--models"),
         Part("smoke-final-hybrid", "hybrid-recipe-smoke/final",
              (*BASE, "--eval", "xquad-r", "--split", "test", "--alphas", "0.5", "--baseline", "0.5",
               "--test-untrained", *TINY, "--seeds", "0", "--models", "{model}:layers=1"), "1", model_flag="--models"),
         Part("smoke-final-others", "hybrid-recipe-smoke/final",
              (*BASE, "--eval", "xquad-r", "--split", "test", "--alphas", "0,1", "--baseline", "0.5",
               "--test-untrained", *TINY, "--seeds", "0", "--no-untrained", "--models", "{model}:layers=1"), "2",
              model_flag="--models")]


def recipe_name(params: dict) -> str:
    """A search cell's recipe as a short label: the knobs that differ from the defaults."""
    if params.get("alpha") is None:
        return "untrained"
    knobs = [f"batch {params['batch_size']}", f"{params['max_steps']} steps", f"lr {params['lr']:g}"]
    knobs += [f"{k} {v}" for k, v in (params.get("recipe") or {}).items() if k != "bf16"]
    if params.get("wise") is not None:
        knobs.append(f"WiSE {params['wise']:g}")
    return ", ".join(knobs)


def summary(out: str) -> int:
    """The dev table of every search cell in OUT/hybrid-recipe/search (one seed each: for choosing, not testing)."""
    from mlret_plugin.atomic import atomic_write_text
    from mlret_plugin.tables import markdown_table

    folder = os.path.join(out, "hybrid-recipe", "search")
    cells = [json.loads(line) for line in open(os.path.join(folder, "cells.jsonl"), encoding="utf-8") if line.strip()]
    body, base = [], None
    for cell in cells:
        values = {(r["setting"], r["measure"]): r["value"] for r in cell["rows"] if r["breakdown"] == "summary"}
        line = [values.get(("mono", "AP")), values.get(("cross", "AP")), values.get(("multi", "AP")),
                values.get(("multi", "MaxRankDist"))]
        if cell["params"].get("alpha") is None:
            base = line
        minutes = (cell["info"].get("train_seconds", 0) + cell["info"].get("eval_seconds", 0)) / 60
        body.append((recipe_name(cell["params"]), line, minutes))
    rows, worst = [], {}
    for name, line, minutes in body:
        deltas = [v - b for v, b in zip(line[:3], base)] if base and None not in line[:3] else None
        if deltas and name != "untrained":
            worst[name] = min(deltas)
        rows.append([name] + [f"{v:.4f}" if v is not None else "-" for v in line[:3]] + [f"{line[3]:.1f}"]
                    + ([f"{d:+.4f}" for d in deltas] + [f"{min(deltas):+.4f}"] if deltas else ["-"] * 4)
                    + [f"{minutes:.0f}"])
    table = markdown_table(["recipe (alpha 0.5, seed 0)", "Mono AP", "Cross AP", "Multi AP", "MaxRankDist",
                            "ΔMono", "ΔCross", "ΔMulti", "worst Δ", "minutes"], rows)
    chosen = max(worst, key=worst.get) if worst else None
    text = (f"# Recipe search on MLQA-R dev\n\nDev questions against every MLQA-R candidate, sentence candidates; Δ = "
            f"recipe - untrained; minutes: training + that cell's evaluation. One seed per recipe: this table chooses "
            f"the recipe; the final grid tests it.\n\n{table}\n\nRule: the recipe whose worst Δ over Mono, Cross and "
            f"Multi is largest (a recipe that lifts every setting). Chosen: **{chosen or '-'}**.\n")
    atomic_write_text(os.path.join(folder, "summary.md"), text)
    print(text)
    return 0


# the goal for hybrid on XQuAD-R: (comparison, bound: a number or the untrained model's value)
GOAL = {("mono", "AP"): (">=", "untrained"), ("cross", "AP"): (">", "untrained"), ("multi", "AP"): (">=", 0.60),
        ("multi", "MaxRankDist"): ("<=", 300)}
COMPARE = {">=": operator.ge, ">": operator.gt, "<=": operator.le}


def _test(row: dict | None, sign: int = 1) -> str:
    """A tested difference as `Δ* [CI], Holm p`; sign -1 turns "alpha - hybrid" into "hybrid - alpha"."""
    if not row or row.get("p_value") is None:
        return "-"
    digits = 1 if row["measure"] == "MaxRankDist" else 4
    low, high = sorted((sign * row["ci_low"], sign * row["ci_high"]))
    return f"{sign * row['test_delta']:+.{digits}f}{mark(row)} [{low:+.{digits}f}, {high:+.{digits}f}], {row['p_holm']:.2g}"


def final(out: str, folder: str = "hybrid-recipe") -> int:
    """The final grid's table from OUT/hybrid-recipe/final/results.jsonl: each alpha (mean ± std over seeds),
    hybrid against X-Y, X-X and the untrained model (paired tests, Holm across the report), and the goal."""
    from mlret_plugin.tables import markdown_table

    path = os.path.join(out, folder, "final", "results.jsonl")
    if not os.path.exists(path):
        print(f"{path}: no final results yet; run the final-* parts (or --smoke) with --out {out} first", file=sys.stderr)
        return 2
    rows = [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]
    at = {(r["eval"], r["setting"], r["measure"], r["alpha"], r["breakdown"]): r for r in rows
          if r["breakdown"] in ("summary", "contrast") and (r["setting"], r["measure"]) in GOAL}

    def value(r):
        if not r:
            return "-"
        digits = 1 if r["measure"] == "MaxRankDist" else 4
        if r["alpha"] is None:
            return f"{r['value']:.{digits}f}"
        spread = f" ± {r['std']:.{digits}f}" if r["n_seeds"] > 1 else ""  # one seed has no spread to show
        return f"{r['value']:.{digits}f}{spread} ({r['n_seeds']})"

    body = []
    for eval_name in dict.fromkeys(r["eval"] for r in rows):
        for setting, measure in GOAL:
            get = {a: at.get((eval_name, setting, measure, a, "summary")) for a in (None, 0.0, 0.5, 1.0)}
            hybrid, untrained = get[0.5], get[None]
            if not any(get.values()):
                continue
            goal = "-"
            if eval_name == "xquad-r" and hybrid and untrained:
                sign, bound = GOAL[(setting, measure)]
                limit = untrained["value"] if bound == "untrained" else bound
                goal = f"{sign} {bound:g}" if bound != "untrained" else f"{sign} untrained"
                goal += f": {'yes' if COMPARE[sign](hybrid['value'], limit) else 'no'}"
            body.append([eval_name, setting, measure, value(untrained), value(get[0.0]), value(hybrid), value(get[1.0]),
                         _test(get[0.0], -1), _test(get[1.0], -1),
                         _test(at.get((eval_name, setting, measure, 0.5, "contrast"))), goal])
    table = markdown_table(["eval", "setting", "measure", "untrained", "X-Y (alpha 0)", "hybrid (0.5)", "X-X (1)",
                            "hybrid - X-Y [95% CI], Holm p", "hybrid - X-X [95% CI], Holm p",
                            "hybrid - untrained [95% CI], Holm p", "goal (hybrid, XQuAD-R)"], body)
    print(f"# Final grid: the chosen recipe, zero-shot on XQuAD-R and on MLQA-R test\n\n{table}\n\n"
          "Values: mean ± std over training seeds (count). Δ: paired sign-flip test over source questions on each "
          "query's value averaged over the seeds both sides share; `*` = Holm p < 0.05 across the report's tests.")
    return 0


ARCHIVE = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "docs", "results",
                       "hybrid-recipe-final")


def keep(out: str, restore: bool, archive: str = ARCHIVE) -> int:
    """``--restore``: the archived final cells into OUT/hybrid-recipe/final (the next final part, e.g.
    ``--part final-untrained``, then reports every seed); ``--archive``: OUT's new final cells into the archive."""
    from mlret_plugin.experiments.archive import archive_cells, restore_cells

    folder = os.path.join(out, "hybrid-recipe", "final")
    archive = os.path.normpath(archive)
    if restore:
        print(f"restored {len(restore_cells(archive, folder))} cell(s) from {archive} into {folder}")
    else:
        print(f"archived {len(archive_cells(folder, archive))} new cell(s) from {folder} into {archive}")
    return 0


if __name__ == "__main__":
    argv = sys.argv[1:]
    if "--summary" in argv:
        argv.remove("--summary")
        out = argv[argv.index("--out") + 1] if "--out" in argv else "mlret-out/e5"
        sys.exit(summary(out))
    if "--archive" in argv or "--restore" in argv:
        out = argv[argv.index("--out") + 1] if "--out" in argv else "mlret-out/e5"
        sys.exit(keep(out, restore="--restore" in argv))
    if "--final" in argv:
        argv.remove("--final")
        out = argv[argv.index("--out") + 1] if "--out" in argv else "mlret-out/e5"
        sys.exit(final(out, "hybrid-recipe-smoke" if "--smoke" in argv else "hybrid-recipe"))
    if "--smoke" in argv:
        argv.remove("--smoke")
        sys.exit(run_parts(SMOKE, __doc__.splitlines()[0], argv + (["--all"] if "--list" not in argv else [])))
    sys.exit(run_parts(PARTS, __doc__.splitlines()[0], argv))
