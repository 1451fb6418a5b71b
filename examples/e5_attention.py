"""Questions A and B with the offline multilingual encoder (offline-e5, multilingual-e5-small: 12 layers,
384 hidden, 512 positions): dense vs local vs block-sparse attention as the pool grows and as contexts get
noisier, with paired tests against dense in every report.

A, pool growth (zero-shot swap; sentence candidates, median ~40 e5 tokens with the "passage: " prompt):
  patterns with matched key budgets that bite at that length, ``local:window=8`` (17 keys per token) vs
  ``block_sparse:block=16:band=0`` (the 16-token diagonal block); each report's density table gives the
  share of attention each keeps at the candidates' real lengths.
  - ``pools-xquad-*``: XQuAD-R pools of 2, 4, 7, 11 languages (en first, seeded nested order).
  - ``pools-mlqa-*``: MLQA-R pools of 2, 4, 7 languages.
  One part per variant (each variant re-encodes every query and candidate; dense is shared through the cell
  cache: the sparse parts only run their own variant when dense is finished).
A, after a short fine-tune with the pattern in place: each variant, dense too, trained 100 hybrid batches of
  16 MLQA-R pairs (alpha 0.5) after the swap, evaluated on the XQuAD-R 2-language pool (``finetune-*``) and,
  retrained with the same seed, on the 11-language pool (``finetune-pool11-*``); 3 training seeds, one part per
  (pool, seed, variant). Training passages are the answer sentence alone, the candidates A evaluates (the
  patterns bite there: density ~0.4); sentence + paragraph took ~21 s a step here, over 30 minutes a part.
B, noisy contexts (``noise-*``): (sentence, paragraph) candidates at the model's 512 positions, paragraphs
  lengthened by distractor sentences to noise 0 / 0.5 / 1 (distractor / original tokens), drawn from the same
  language or from every language (``mixed``); XQuAD-R 2-language pool; ``local:window=48`` (97 keys) vs
  ``block_sparse:block=32`` (band of one block each side: 96 keys). Reports give the achieved noise level.
  Noise 0 is the same with either distractor source and is computed once.

Every part shares its question's --out subfolder (``OUT/a-pools-xquad``, ``OUT/a-pools-mlqa``,
``OUT/a-finetune``, ``OUT/b-noise``), so the report after the last part covers the whole grid.

Minutes per part (``--list``): wall times measured on this machine (2 CPU cores, one part at a time),
rounded up: pools 5.4-8.0 min, fine-tune 4.2-5.1 (2 languages) and 8.1-8.9 (11), noise 941-1,181 s. Each
part prints its wall time; every part is under 30 minutes.

    python examples/e5_attention.py --list
    python examples/e5_attention.py --part pools-xquad-dense      # then -local, -block; the other parts likewise
    python examples/e5_attention.py --quick                       # ~2-5 min smoke run (2 languages, dense + local)
"""
from __future__ import annotations

import sys

sys.path.insert(0, __import__("os").path.dirname(__file__))

from e5_parts import Part, run_parts  # noqa: E402

SENTENCE = {"dense": "dense", "local": "dense,local:window=8", "block": "dense,block_sparse:block=16:band=0"}
CONTEXT = "dense,local:window=48,block_sparse:block=32"

PARTS: list[Part] = []
for name, variants in SENTENCE.items():
    PARTS.append(Part(f"pools-xquad-{name}", "a-pools-xquad",
                      ("attention", "--collection", "xquad-r", "--variants", variants, "--noise", "0",
                       "--pool-sizes", "2,4,7,11", "--candidates", "sentence"), "6-8"))
for name, variants in SENTENCE.items():
    PARTS.append(Part(f"pools-mlqa-{name}", "a-pools-mlqa",
                      ("attention", "--collection", "mlqa-r", "--variants", variants, "--noise", "0",
                       "--pool-sizes", "2,4,7", "--candidates", "sentence"), "5-6"))
for pools, prefix, minutes in (("2", "finetune", "5"), ("11", "finetune-pool11", "9")):
    for seed in (0, 1, 2):
        for name, variants in SENTENCE.items():
            PARTS.append(Part(f"{prefix}-s{seed}-{name}", "a-finetune",
                              ("attention", "--collection", "xquad-r", "--variants", variants, "--noise", "0",
                               "--pool-sizes", pools, "--candidates", "sentence", "--finetune-steps", "100",
                               "--finetune-batch-size", "16", "--finetune-passages", "text", "--seeds", str(seed)),
                              minutes))
for noise, mixed in (("0", False), ("0.5", False), ("1", False), ("0.5", True), ("1", True)):
    PARTS.append(Part(f"noise-{noise}" + ("-mixed" if mixed else ""), "b-noise",
                      ("attention", "--collection", "xquad-r", "--variants", CONTEXT, "--noise", noise,
                       "--pool-sizes", "2", "--candidates", "context", "--max-seq-length", "512",
                       *(["--mixed-noise"] if mixed else [])), "16-20"))
QUICK = Part("quick", "quick", ("attention", "--collection", "xquad-r", "--variants", "dense,local:window=8",
                                "--noise", "0", "--pool-sizes", "2", "--candidates", "sentence"), "2-5")

if __name__ == "__main__":
    argv = sys.argv[1:]
    if "--quick" in argv:
        argv = [a for a in argv if a != "--quick"] + ["--part", "quick"]
        PARTS.append(QUICK)
    sys.exit(run_parts(PARTS, __doc__.splitlines()[0], argv))
