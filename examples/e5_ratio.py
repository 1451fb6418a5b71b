"""Question C with the offline multilingual encoder: model size x hybrid batch ratio alpha, zero-shot, with seeds
and paired tests.

Sizes: the first 4 / 8 / 12 layers of offline-e5 (multilingual-e5-small; ``offline-e5:layers=N``; truncations
of one checkpoint, labelled as such, not separately pre-trained models). Each (size, alpha in 0 / 0.5 / 1,
training seed in 0 / 1 / 2) fine-tunes a fresh copy for 100 hybrid batches of 16 MLQA-R pairs (passage = the
answer sentence; MultipleNegativesRankingLoss, lr 2e-5) and is evaluated zero-shot on an XQuAD-R pool that
mixes scripts (en, de, ar, zh: Latin, Arabic and Han), so cross-lingual matches cannot come from shared Latin
words; candidates = sentences. Each size's untrained starting point is evaluated once (it has no seed).
Within each size every alpha (and the untrained model) is tested against alpha 0.5: paired randomisation
test over questions, 95% bootstrap CI, Holm across the report's tests.

One part for the three untrained starting points and one per (training seed, size), all sharing
``OUT/c-ratio``: 10 parts; the report after the last covers 3 sizes x 3 alphas x 3 seeds. Minutes
(``--list``): wall times measured on this machine, rounded up (4 / 8 / 12 layers 470-477 / 740-782 /
1,036-1,044 s; the untrained part from its cells' 249 s of evaluation plus loading). Each part prints its
wall time; every part is under 30 minutes.

    python examples/e5_ratio.py --list
    python examples/e5_ratio.py --part untrained --part s0-l4 --part s0-l8 --part s0-l12   # then s1-*, s2-*
"""
from __future__ import annotations

import sys

sys.path.insert(0, __import__("os").path.dirname(__file__))

from e5_parts import Part, run_parts  # noqa: E402

COMMON = ("ratio", "--train", "mlqa-r", "--eval", "xquad-r", "--eval-langs", "en,de,ar,zh", "--alphas", "0,0.5,1",
          "--baseline", "0.5", "--max-steps", "100", "--batch-size", "16", "--candidates", "sentence")
SIZES = {"l4": "{model}:layers=4", "l8": "{model}:layers=8", "l12": "{model}"}
MINUTES = {"l4": "8", "l8": "13", "l12": "18"}

PARTS = [Part("untrained", "c-ratio", (*COMMON, "--models", ",".join(SIZES.values()), "--only-untrained"), "5",
              model_flag="--models")]
PARTS += [Part(f"s{seed}-{size}", "c-ratio", (*COMMON, "--models", spec, "--seeds", str(seed), "--no-untrained"),
               MINUTES[size], model_flag="--models")
          for seed in (0, 1, 2) for size, spec in SIZES.items()]

if __name__ == "__main__":
    sys.exit(run_parts(PARTS, __doc__.splitlines()[0]))
