"""The claim of arXiv 2408.10536 (Table 1), in direction, with the offline multilingual encoder and tests.

offline-e5 (multilingual-e5-small) fine-tuned on MLQA-R with X-X batches only (alpha 1), X-Y only (alpha 0)
and hybrid batches (alpha 0.5), 3 training seeds each, 100 hybrid batches of 16 pairs (passage = the answer
sentence; lr 2e-5). 50 seeded MLQA-R articles are held out of training. Every model is evaluated
- zero-shot on the whole XQuAD-R pool (11 languages, sentence candidates): Mono, Cross, Multi mAP over the full
  ranking and MaxRankDist (language bias; lower is better);
- on MLQA-R's held-out questions (the 50 articles' questions in every language, against every MLQA-R candidate).
The untrained model is the starting point. Alphas 0 and 1 (and the untrained model) are tested against the
hybrid alpha 0.5 per setting: paired randomisation test over questions, 95% bootstrap CI of the difference,
Holm across the report's tests. The claim holds in direction where hybrid is best or tied (no significant
difference) on Mono, Cross and Multi, and its MaxRankDist is significantly lower than X-X (alpha 1).

Much smaller than the paper's runs (100 steps, a 118M-parameter model, CPU): read directions, not levels.
One part for the untrained model and one per (training seed, alpha), all sharing ``OUT/paper-claim``: 10 parts,
each under 30 minutes (``--list``: wall times measured on this machine, rounded up: untrained 577 s, each
trained part 830-879 s). Each part prints its wall time. Run a seed's ``a0.5`` part before its ``a0`` / ``a1``
parts (they need its cell as their baseline and would otherwise train it themselves).

    python examples/e5_paper_claim.py --list
    python examples/e5_paper_claim.py --part untrained --part s0-a0.5 --part s0-a0 --part s0-a1   # then s1-*, s2-*
"""
from __future__ import annotations

import sys

sys.path.insert(0, __import__("os").path.dirname(__file__))

from e5_parts import Part, run_parts  # noqa: E402

COMMON = ("ratio", "--train", "mlqa-r", "--eval", "xquad-r", "--models", "{model}", "--baseline", "0.5",
          "--max-steps", "100", "--batch-size", "16", "--candidates", "sentence", "--holdout-articles", "50")

PARTS = [Part("untrained", "paper-claim", (*COMMON, "--alphas", "0.5", "--only-untrained"), "10", model_flag="--models")]
for seed in (0, 1, 2):
    for alpha in ("0.5", "0", "1"):
        # --alphas must contain the baseline 0.5: the alpha 0 / 1 parts list it too, and find its cell finished
        # when the seed's a0.5 part ran first (otherwise they train it: nothing is done twice)
        alphas = alpha if alpha == "0.5" else f"{alpha},0.5"
        PARTS.append(Part(f"s{seed}-a{alpha}", "paper-claim",
                          (*COMMON, "--alphas", alphas, "--seeds", str(seed), "--no-untrained"), "15", model_flag="--models"))


if __name__ == "__main__":
    sys.exit(run_parts(PARTS, __doc__.splitlines()[0]))
