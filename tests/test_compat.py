"""Every private API of another library that the plugin uses (mlret_plugin/compat.py), checked against the
installed versions: each accessor works, and a missing symbol is an error naming the library and version."""
from __future__ import annotations

import ir_datasets
import pytest
import torch

from mlret_plugin import compat
from tiny_models import tiny_sentence_transformer


def test_ir_datasets_download_config(tmp_path):
    downloads = compat.ir_datasets_download({"col": {"f": {"url": "https://example.invalid/f.json",
                                                            "expected_md5": "0" * 32, "cache_path": "f.json"}}},
                                            "col", tmp_path)
    assert str(downloads["f"].path(force=False)).endswith("f.json")


def test_ir_datasets_registry_lookup():
    import mlret_plugin  # noqa: F401  registers the ids

    assert compat.ir_datasets_is_registered("xquad-r/en")
    assert not compat.ir_datasets_is_registered("xquad-r/not-an-id")


def test_sentence_transformers_private_helpers(tmp_path):
    model = tiny_sentence_transformer("bert", tmp_path / "m")
    assert compat.st_input_length(model)("four words long here") == len("four words long here")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1.0)
    scheduler = compat.st_scheduler(optimizer, "WarmupLinear", warmup_steps=2, t_total=4)
    assert [group["lr"] for group in optimizer.param_groups] == [0.0]  # warm-up starts at 0
    optimizer.step()
    scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.5)
    model.save(str(tmp_path / "saved"))
    from sentence_transformers.sentence_transformer.modules import Transformer

    loaded = compat.st_load_with_module_classes(str(tmp_path / "saved"), {}, local_files_only=True)
    assert isinstance(loaded[0], Transformer)


def test_transformers_attention_implementation(tmp_path):
    model = tiny_sentence_transformer("bert", tmp_path / "m")
    hf = model[0].auto_model
    assert compat.hf_can_set_attn_implementation(type(hf)) is True
    assert compat.hf_attn_implementation(hf.config) in ("sdpa", "eager")


def test_a_missing_private_api_names_library_version_and_fix(monkeypatch):
    from sentence_transformers.sentence_transformer.fit_mixin import FitMixin

    monkeypatch.delattr(FitMixin, "_get_scheduler")
    with pytest.raises(compat.PrivateApiError, match=r"sentence-transformers \d[\w.]* has no FitMixin._get_scheduler"):
        compat.st_scheduler(None, "WarmupLinear", 1, 2)
    monkeypatch.delattr(ir_datasets.registry, "_registered")
    with pytest.raises(compat.PrivateApiError, match="ir_datasets .* pyproject.toml"):
        compat.ir_datasets_is_registered("xquad-r")
