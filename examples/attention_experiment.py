"""Questions A and B on CPU with the offline English MiniLM: dense vs local vs block-sparse attention on
XQuAD-R, in three grids run one after the other:

- ``pools`` (question A): the pool grows over 2, 4, 7 and 11 languages (English first, then a seeded,
  nested order). Candidates are sentences alone (median ~40 tokens), so the 11-language pool fits the
  CPU budget; the sparse patterns are scaled down to bite there: ``local:window=8`` (17 keys per query)
  vs ``block_sparse:block=16:band=0`` (the 16-token diagonal block).
- ``noise`` (question B): LAReQA's (sentence, paragraph) candidates, with the paragraph lengthened by
  same-language distractor sentences to noise 0 / 1 (distractor / original tokens) on the 2-language
  pool. The input cap is raised to the model's 512 positions: at its default 256 tokens most pairs are
  already full, and noise 0.5 / 1 reached only 0.09 / 0.11 (measured). Patterns with the same key
  budget: ``local:window=48`` (97 keys) vs ``block_sparse:block=32`` (a band of 1 block each side: 96 keys).
- ``finetune`` (question A, not only a zero-shot swap): the ``pools`` grid's patterns on the 2-language pool,
  each variant (dense too) fine-tuned for 100 hybrid batches of 16 MLQA-R pairs (alpha 0.5) after the swap,
  one training seed (``--seeds 0``: an English-model contrast; ``examples/e5_attention.py`` runs 3 seeds).

``pools`` and ``noise`` swap attention zero-shot (same weights). Measured on 2 CPU cores: ``--only pools``
21 min (1,277 s), ``--only noise`` 17.5 min (1,049 s), ``--only finetune`` 15 min (889 s); each under 30
minutes, all three ~54 min. Rerunning resumes from OUT/{pools,noise,finetune}/cells.jsonl.
``--finetune-steps N`` fine-tunes after the swap in the other grids too.

    python examples/attention_experiment.py [--out mlret-out/attention-example] [--only pools|noise|finetune] [--quick]
"""
from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from mlret_plugin.cli.main import main  # noqa: E402

GRIDS = {
    "pools": ["--variants", "dense,local:window=8,block_sparse:block=16:band=0", "--noise", "0",
              "--pool-sizes", "2,4,7,11", "--candidates", "sentence"],
    "noise": ["--variants", "dense,local:window=48,block_sparse:block=32", "--noise", "0,1",
              "--pool-sizes", "2", "--candidates", "context", "--max-seq-length", "512"],
    "finetune": ["--variants", "dense,local:window=8,block_sparse:block=16:band=0", "--noise", "0",
                 "--pool-sizes", "2", "--candidates", "sentence", "--finetune-steps", "100", "--seeds", "0"],
}
QUICK = ["--variants", "dense,local:window=8,block_sparse:block=16:band=0", "--noise", "0", "--pool-sizes", "2",
         "--candidates", "sentence"]


def run(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="mlret-out/attention-example")
    parser.add_argument("--only", choices=sorted(GRIDS), help="run one of the grids")
    parser.add_argument("--finetune-steps", type=int, default=None, help="fine-tune steps after each swap (overrides the grid's)")
    parser.add_argument("--quick", action="store_true", help="sentence candidates, pool of 2, no noise (~3 min smoke run)")
    args = parser.parse_args(argv)
    grids = {"quick": QUICK} if args.quick else {k: v for k, v in GRIDS.items() if args.only in (None, k)}
    for name, options in grids.items():
        out = os.path.join(args.out, name)
        start = time.perf_counter()
        extra = [] if args.finetune_steps is None else ["--finetune-steps", str(args.finetune_steps)]
        code = main(["experiment", "attention", "--collection", "xquad-r", "--model", "offline-minilm", *options,
                     *extra, "--out", out])
        print(f"attention example ({name}): {time.perf_counter() - start:.0f} s wall, outputs in {out}", file=sys.stderr)
        if code:
            return code
    return 0


if __name__ == "__main__":
    sys.exit(run())
