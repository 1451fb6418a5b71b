"""Evaluation: runs from BM25 (Pyserini) and dense models, measured with ir_measures."""


def register_measures() -> None:
    """Register the plugin's measures with ir_measures (idempotent): ``MaxRankDist``."""
    from mlret_plugin.evaluation.measures import register_max_rank_dist

    register_max_rank_dist()
