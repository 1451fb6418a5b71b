"""Multi-process encoding on sentence-transformers' pool equals single-process encoding; bad devices are
clear errors before any model loads."""
from __future__ import annotations

import pytest
import torch

import mlret_plugin
from mlret_plugin.encoding import parse_devices
from mlret_plugin.evaluation.dense import DenseRetriever
from tiny_models import tiny_model_dir

pytestmark = pytest.mark.slow  # spawned encoding worker processes

# Measured max abs difference 6e-8 on unit vectors (a worker's chunk pads some batches differently).
TOLERANCE = 1e-6


def test_two_cpu_processes_equal_one(lareqa_home, tmp_path):
    # The plugin's loader (it installs a hybrid `fit`, a lambda the workers cannot unpickle) and a sparse
    # pattern (the workers, fresh interpreters, must find the plugin's attention registered).
    model = mlret_plugin.load_model(str(tiny_model_dir("bert", tmp_path)), "local", window=3, backend="torch")
    single = DenseRetriever(model, cache=False, show_progress_bar=False, batch_size=4).encode("xquad-r/de-en")
    with DenseRetriever(model, cache=False, show_progress_bar=False, batch_size=4, processes=2) as pooled:
        both = pooled.encode("xquad-r/de-en")  # queries (strings) and candidates ((sentence, context) pairs)
        assert pooled._pool is not None and pooled._pool.started
    assert pooled._pool is None  # closed on exit
    assert both.query_ids == single.query_ids and both.doc_ids == single.doc_ids
    assert (both.queries - single.queries).abs().max() <= TOLERANCE
    assert (both.docs - single.docs).abs().max() <= TOLERANCE
    assert not torch.equal(both.docs, torch.zeros_like(both.docs))


@pytest.mark.parametrize(
    "devices,processes,message",
    [
        ("gpu0", None, "'gpu0' is not a device"),
        ("cuda:0,,cuda:1", None, "no empty items"),
        ("cuda:0", 2, "not both"),
        (None, 0, "processes must be an integer >= 1"),
        ("cuda:0" if not torch.cuda.is_available() else f"cuda:{torch.cuda.device_count()}", None, "cuda:"),
    ],
)
def test_bad_devices_are_clear_errors(devices, processes, message):
    with pytest.raises(ValueError, match=message):
        parse_devices(devices, processes)


def test_device_lists():
    assert parse_devices(None, None) is None and parse_devices(None, 1) is None
    assert parse_devices(None, 3) == ["cpu", "cpu", "cpu"]
    assert parse_devices("cpu, cpu") == ["cpu", "cpu"]


def test_cli_bad_device_fails_before_any_model_loads(lareqa_home, capsys, monkeypatch):
    from mlret_plugin.cli.main import main
    from mlret_plugin import model as models

    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("model loaded before --devices was checked"))
    assert main(["evaluate", "xquad-r/en", "--model", "offline-minilm", "--devices", "tpu:0"]) == 2
    assert "'tpu:0' is not a device" in capsys.readouterr().err
    assert main(["lareqa", "xquad-r", "--model", "offline-minilm", "--devices", "cuda:0", "--processes", "2"]) == 2
    assert "not both" in capsys.readouterr().err
