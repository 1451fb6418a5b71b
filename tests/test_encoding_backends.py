"""Encoding backends (mlret_plugin.encoding.backends) on a tiny random BERT: each backend x precision this machine
runs encodes within a stated tolerance of torch fp32; the others are clear errors; exports are cached, keyed,
atomic and rebuilt when damaged; the embedding cache never serves one backend's embeddings for another."""
from __future__ import annotations

import pickle
import warnings

import pytest
import torch

import mlret_plugin
from mlret_plugin.encoding import backends
from mlret_plugin.encoding.backends import BackendError, CorruptExport, check_backend, runtime_of
from tiny_models import tiny_model_dir

TEXTS = ["hello world", "a longer text about things that happened in a city long ago, with names", "x",
         "fünf Wörter auf Deutsch hier"]
# (min cosine to torch fp32, max abs difference) per precision; the random tiny model has no outliers, so int8
# holds closer here than on e5 (0.995, docs/benchmarks.md)
TOLERANCE = {"fp32": (0.99999, 1e-4), "bf16": (0.999, 0.05), "int8": (0.99, 0.1)}
SUPPORTED = [("torch", "bf16"), ("onnx", "fp32"), ("onnx", "int8"), ("openvino", "fp32"), ("openvino", "bf16")]


def _runs_here(backend: str, precision: str) -> None:
    try:
        check_backend(backend, precision)
    except BackendError as e:
        pytest.skip(f"{backend} {precision} does not run on this machine: {e}")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return str(tiny_model_dir("bert", tmp_path_factory.mktemp("tiny")))


@pytest.fixture
def exports(tmp_path, monkeypatch):
    folder = tmp_path / "exports"
    monkeypatch.setattr(backends, "exports_dir", lambda cache_dir=None: folder)
    return folder


def _encode(model, texts=TEXTS) -> torch.Tensor:
    return model.encode(texts, convert_to_tensor=True, normalize_embeddings=True).float()


@pytest.mark.parametrize("backend, precision", SUPPORTED)
def test_each_backend_encodes_close_to_torch_fp32(tiny, exports, backend, precision):
    _runs_here(backend, precision)
    reference = _encode(mlret_plugin.load_model(tiny))
    model = mlret_plugin.load_model(tiny, backend=backend, precision=precision)
    assert runtime_of(model)["backend"] == backend and runtime_of(model)["precision"] == precision
    got = _encode(model)
    min_cos, max_abs = TOLERANCE[precision]
    assert torch.nn.functional.cosine_similarity(got, reference).min() >= min_cos
    assert (got - reference).abs().max() <= max_abs


@pytest.mark.parametrize("backend", ["onnx", "openvino"])
def test_exports_follow_other_shapes_than_their_example(tiny, exports, backend):
    """The graph is traced on a padded pair of short texts; one unpadded text, a batch of one long text and a
    mixed batch must still equal torch."""
    _runs_here(backend, "fp32")
    reference = mlret_plugin.load_model(tiny)
    model = mlret_plugin.load_model(tiny, backend=backend)
    long_text = " ".join(["word"] * 120)
    for batch in (["x"], [long_text], ["x", long_text, "mid length text here"]):
        assert (_encode(model, batch) - _encode(reference, batch)).abs().max() < 1e-4


@pytest.mark.parametrize("backend, precision, fix", [
    ("onnx", "bf16", "openvino --precision bf16"), ("torch", "int8", "--backend onnx --precision int8"),
    ("openvino", "int8", "nncf"), ("tpu", "fp32", "expected one of"), ("torch", "fp8", "expected one of")])
def test_unsupported_combinations_are_errors_naming_the_fix(backend, precision, fix):
    with pytest.raises(BackendError, match=fix):
        check_backend(backend, precision)


def test_bf16_without_cpu_support_and_missing_packages_are_errors(monkeypatch):
    monkeypatch.setattr(backends, "cpu_flags", lambda: {"avx2", "avx512f"})
    with pytest.raises(BackendError, match="AVX512_BF16 or AMX"):
        check_backend("torch", "bf16")
    monkeypatch.setattr(backends, "_installed", lambda module: module != "openvino")
    with pytest.raises(BackendError, match=r"pip install 'mlret-plugin\[openvino\]'"):
        check_backend("openvino", "fp32")


def test_an_export_is_built_once_and_keyed_by_weights_and_versions(tiny, exports, monkeypatch):
    _runs_here("onnx", "fp32")
    mlret_plugin.load_model(tiny, backend="onnx")
    assert len(list(exports.iterdir())) == 1
    built = []
    original = backends._export
    monkeypatch.setattr(backends, "_export", lambda *a: built.append(1) or original(*a))
    mlret_plugin.load_model(tiny, backend="onnx")
    assert built == []  # the second load reads the cached export
    changed = mlret_plugin.load_model(tiny)
    with torch.no_grad():
        next(changed[0].auto_model.parameters()).add_(0.01)  # another model: another export
    backends.apply_backend(changed, "onnx", "fp32")
    monkeypatch.setattr(backends, "_version", lambda package: "99.0")  # another library version: another export
    mlret_plugin.load_model(tiny, backend="onnx")
    assert built == [1, 1] and len(list(exports.iterdir())) == 3


def test_a_damaged_export_is_rebuilt_with_a_warning(tiny, exports):
    _runs_here("onnx", "fp32")
    reference = _encode(mlret_plugin.load_model(tiny, backend="onnx"))
    (onnx_file,) = exports.glob("*/model.onnx")
    onnx_file.write_bytes(onnx_file.read_bytes()[:1000])
    with pytest.warns(CorruptExport, match="damaged or incomplete"):
        model = mlret_plugin.load_model(tiny, backend="onnx")
    assert torch.equal(_encode(model), reference)


def test_an_interrupted_export_leaves_nothing_behind(tiny, exports, monkeypatch):
    _runs_here("onnx", "fp32")

    def fail(wrapped, args, key, out):
        (out / "model.onnx").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(backends, "_export_files", fail)
    with pytest.raises(KeyboardInterrupt):
        mlret_plugin.load_model(tiny, backend="onnx")
    assert not exports.exists() or list(exports.iterdir()) == []


def test_cached_embeddings_of_one_backend_are_never_served_for_another(tiny, exports, tmp_path, lareqa_home):
    _runs_here("onnx", "int8")
    from mlret_plugin.encoding import EmbeddingCache
    from mlret_plugin.evaluation.dense import DenseRetriever

    cache = EmbeddingCache(tmp_path / "emb")
    seen = {}
    for backend, precision in (("torch", "fp32"), ("onnx", "fp32"), ("onnx", "int8"), ("torch", "fp32")):
        retriever = DenseRetriever(tiny, candidates="sentence", cache=cache, backend=backend, precision=precision,
                                   show_progress_bar=False)
        encoded = retriever.encode("xquad-r/en")
        seen.setdefault((backend, precision), []).append((retriever.encoded_texts, retriever.cached_texts,
                                                          encoded.docs))
    assert all(seen[k][0][0] > 0 and seen[k][0][1] == 0 for k in seen)  # each backend encodes for itself
    again = seen[("torch", "fp32")][1]
    assert again[0] == 0 and torch.equal(again[2], seen[("torch", "fp32")][0][2])  # its own entry is reused
    assert not torch.equal(seen[("onnx", "int8")][0][2], seen[("torch", "fp32")][0][2])


def test_patterns_stay_on_torch_and_run_in_bf16(tiny, exports):
    _runs_here("torch", "bf16")
    model = mlret_plugin.load_model(tiny, "local", window=2, precision="bf16")
    reference = mlret_plugin.load_model(tiny, "local", window=2)
    cos = torch.nn.functional.cosine_similarity(_encode(model), _encode(reference))
    assert cos.min() >= TOLERANCE["bf16"][0]
    mlret_plugin.set_attention(model, "dense")  # still swappable through the bf16 wrapper
    assert model[0].attention_config.kind == "dense"
    with pytest.raises(BackendError, match="sparse patterns run on torch"):
        mlret_plugin.load_model(tiny, "local", window=2, backend="onnx")


def test_an_exported_model_pickles_for_encoding_workers(tiny, exports):
    _runs_here("onnx", "fp32")
    model = mlret_plugin.load_model(tiny, backend="onnx")
    before = _encode(model)
    clone = pickle.loads(pickle.dumps(model[0].model))  # the session is not pickled; it reopens
    assert clone._runner is None
    model[0].model = clone
    assert torch.equal(_encode(model), before)


def test_backend_names_the_attention_backend_for_one_release(tiny, exports):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = mlret_plugin.load_model(tiny, "local", window=2, backend="auto")
    assert any(issubclass(w.category, DeprecationWarning) and "attention_backend" in str(w.message) for w in caught)
    assert model[0].attention_backend == "auto" and runtime_of(model) is None
    model = mlret_plugin.load_model(tiny, "local", window=2, backend="torch")  # as before: the torch path
    assert model[0].attention_backend == "torch"


@pytest.mark.parametrize("flags, installed, backend, precision, expected", [
    ({"avx512_bf16"}, {"openvino", "onnxruntime", "onnx"}, "auto", "auto", ("openvino", "fp32")),  # bf16: not faithful
    ({"avx512_bf16"}, {"onnxruntime", "onnx"}, "auto", "auto", ("torch", "fp32")),
    ({"avx512f"}, {"openvino"}, "auto", "auto", ("openvino", "fp32")),
    ({"avx512f"}, set(), "auto", "auto", ("torch", "fp32")),
    ({"avx512_bf16"}, {"openvino"}, "torch", "auto", ("torch", "fp32")),
    ({"avx512_bf16"}, {"openvino"}, "auto", "fp32", ("openvino", "fp32")),
    ({"avx512_bf16"}, {"onnxruntime", "onnx"}, "onnx", "auto", ("onnx", "fp32")),  # int8 only when asked for
    ({"avx512_bf16"}, {"onnxruntime", "onnx", "openvino"}, "auto", "int8", ("onnx", "int8")),
    ({"avx512_bf16"}, {"onnxruntime", "onnx", "openvino"}, "auto", "bf16", ("openvino", "bf16")),  # asked for: fastest
    ({"avx512_bf16"}, set(), "auto", "bf16", ("torch", "bf16")),
])
def test_auto_is_the_fastest_faithful_variant_that_runs_here(monkeypatch, flags, installed, backend, precision,
                                                            expected):
    monkeypatch.setattr(backends, "cpu_flags", lambda: flags)
    monkeypatch.setattr(backends, "_installed", lambda module: module in installed)
    chosen_backend, chosen_precision, skipped = backends.choose_variant(backend, precision)
    assert (chosen_backend, chosen_precision) == expected
    if backend == precision == "auto":
        assert expected in backends.FAITHFUL
    if expected == ("torch", "fp32") and backend == "auto":  # the faster faithful one was passed over, with its fix
        assert any("pip install 'mlret-plugin[openvino]'" in reason for reason in skipped)


def test_auto_keeps_sparse_patterns_on_torch_and_gpus_on_the_reference(monkeypatch):
    monkeypatch.setattr(backends, "cpu_flags", lambda: {"avx512_bf16"})
    monkeypatch.setattr(backends, "_installed", lambda module: True)
    assert backends.choose_variant(sparse=True)[:2] == ("torch", "fp32")
    assert backends.choose_variant(precision="bf16", sparse=True)[:2] == ("torch", "bf16")
    assert backends.choose_variant(device="cuda:0")[:2] == ("torch", "fp32")
    with pytest.raises(BackendError, match="onnx"):  # a variant given in full is checked, never replaced
        backends.choose_variant("onnx", "bf16")


def test_auto_is_logged_and_names_what_to_install(tiny, monkeypatch, caplog):
    monkeypatch.setattr(backends, "cpu_flags", lambda: {"avx512f"})
    monkeypatch.setattr(backends, "_installed", lambda module: False)
    model = mlret_plugin.load_model(tiny)
    with caplog.at_level("INFO", logger=backends.__name__):
        assert backends.resolve_variant(model, "auto", "auto", "tiny") == ("torch", "fp32")
    warning = [r for r in caplog.records if r.levelname == "WARNING"]
    assert warning and "tiny: encoding with torch fp32" in warning[0].getMessage()
    assert "mlret-plugin[openvino]" in warning[0].getMessage()


def test_the_evaluating_commands_default_to_auto_and_dense_index_to_the_reference():
    from mlret_plugin.cli.main import build_parser

    parser = build_parser()
    for argv in (["lareqa", "xquad-r"], ["evaluate", "lareqa/xquad-r/en"], ["train", "--train", "x.jsonl", "--model", "m",
                                                                            "--out", "o"]):
        args = parser.parse_args(argv)
        assert (args.backend, args.precision) == ("auto", "auto"), argv
    args = parser.parse_args(["dense-index", "lareqa/xquad-r/en", "--model", "offline-e5", "--out", "o"])
    assert (args.backend, args.precision) == ("torch", "fp32")


def test_auto_without_bf16_hardware_is_info_not_a_warning(tiny, monkeypatch, caplog):
    monkeypatch.setattr(backends, "cpu_flags", lambda: {"avx512f"})
    monkeypatch.setattr(backends, "_installed", lambda module: True)  # nothing to install: the CPU decides
    model = mlret_plugin.load_model(tiny)
    with caplog.at_level("INFO", logger=backends.__name__):
        assert backends.resolve_variant(model, "auto", "auto", "tiny") == ("openvino", "fp32")
    assert [r.levelname for r in caplog.records] == ["INFO"]
