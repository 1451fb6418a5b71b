"""Encoding backends: a sentence-transformers model's transformer run by torch, ONNX Runtime or OpenVINO.

sentence-transformers has ``backend="onnx"`` / ``"openvino"`` itself, through optimum-onnx and optimum-intel,
but their current releases cannot be installed beside this package: optimum-onnx 0.1.0 requires transformers
< 4.58, optimum-intel 2.2.0 transformers < 5.6 (and torchvision), and the plugin runs on transformers 5. So
the plugin exports the model's *transformer* itself, with the exporters of torch (``torch.onnx.export``) and
OpenVINO (``openvino.convert_model``), and replaces only that module's model: tokenization, prompts,
pooling and normalisation stay sentence-transformers' own modules, so every backend sees the same token ids
and pools the same way as torch fp32.

=========  ==============================  =================================  ===============================
backend    fp32                            bf16                               int8
=========  ==============================  =================================  ===============================
torch      the model as loaded             ``torch.autocast`` (matmuls bf16,  refused: use onnx int8
                                           layer norm and softmax fp32)
onnx       ONNX Runtime, CPU provider      refused: the CPU provider has no   dynamic quantization: int8
                                           bf16 matmul                        weights per channel, int8
                                                                              activations per batch
openvino   OpenVINO CPU, f32               OpenVINO CPU, bf16 precision hint  refused: needs nncf (not a
                                                                              dependency)
=========  ==============================  =================================  ===============================

bf16 needs a CPU with AVX512_BF16 or AMX (or a GPU for torch); without one it is an error, never fp32 in
disguise. Exports are built once per (source weights, backend, precision, library versions) in the model
cache (``IR_DATASETS_HOME/mlret/models/exports``), in a staging folder renamed into place, with each file's
sha256 in ``manifest.json``; a file that no longer matches is reported, deleted and rebuilt.
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
import warnings
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mlret_plugin.atomic import atomic_write_text
from mlret_plugin.constants import ENCODING_BACKENDS, PRECISIONS
from mlret_plugin.staging import publish, remove_stale, staging_path

log = logging.getLogger(__name__)

BACKENDS = ENCODING_BACKENDS
EXPORT_FORMAT = 1  # bump when an export's layout or recipe changes
EXTRAS = {"onnx": "onnx", "openvino": "openvino"}  # pip install mlret-plugin[EXTRA]
REFUSED = {
    ("torch", "int8"): "torch int8 (dynamic quantization in torch.ao) is deprecated upstream; use "
                       "--backend onnx --precision int8",
    ("onnx", "bf16"): "ONNX Runtime's CPU provider has no bf16 matmul; use --backend openvino --precision bf16 "
                      "or --backend torch --precision bf16",
    ("openvino", "int8"): "OpenVINO int8 needs nncf, which is not a dependency; use --backend onnx --precision int8",
}


class BackendError(ValueError):
    """A backend / precision this machine or installation cannot run; the message names the fix."""


class CorruptExport(UserWarning):
    """An export in the model cache no longer matches its manifest: it is deleted and rebuilt."""


# --- what this machine can run -------------------------------------------------------------------------------------

def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo; empty elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_has_bf16() -> bool:
    """AVX512_BF16 or AMX: bf16 matmuls in hardware."""
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


def describe_machine() -> str:
    """One line for reports and cell records: architecture, cores, the CPU's bf16 hardware, torch, GPU. bf16
    kernels differ between CPUs (AMX or AVX512_BF16), so a bf16 cell's numbers and speed can differ between
    machines; a grid grown over several machines says which."""
    import os
    import platform

    import torch

    flags = cpu_flags()
    isa = [name for flag, name in (("amx_bf16", "AMX"), ("avx512_bf16", "AVX512_BF16")) if flag in flags]
    return (f"{platform.machine()} {os.cpu_count()} CPU cores (bf16 hardware: {', '.join(isa) or 'none'}), "
            f"torch {torch.__version__}, {'CUDA' if torch.cuda.is_available() else 'no GPU'}")


def check_backend(backend: str, precision: str, device: str = "cpu") -> None:
    """A clear error for a backend / precision that cannot run here, before any model work."""
    if backend not in BACKENDS:
        raise BackendError(f"backend={backend!r}; expected one of {BACKENDS}")
    if precision not in PRECISIONS:
        raise BackendError(f"precision={precision!r}; expected one of {PRECISIONS}")
    if (backend, precision) in REFUSED:
        raise BackendError(f"backend {backend} with precision {precision} is not supported: "
                           f"{REFUSED[(backend, precision)]}")
    if backend != "torch":
        module = {"onnx": "onnxruntime", "openvino": "openvino"}[backend]
        needed = ["onnxruntime", "onnx"] if backend == "onnx" else ["openvino"]
        missing = [m for m in needed if not _installed(m)]
        if missing:
            raise BackendError(f"backend {backend} needs {', '.join(missing)}: pip install 'mlret-plugin[{EXTRAS[backend]}]'")
        if str(device) != "cpu":
            raise BackendError(f"backend {backend} runs on the CPU here ({module}); got device {device}. Use "
                               "--backend torch on a GPU")
    if precision == "bf16" and str(device) == "cpu" and not cpu_has_bf16():
        raise BackendError("precision bf16 needs a CPU with AVX512_BF16 or AMX (this one has neither, so bf16 would "
                           "be emulated, slower than fp32); use --precision fp32")


# Every variant, fastest first on a CPU with AVX512_BF16 (benchmarks/encoding.py --backends), and those measured
# faithful to torch fp32 (docs/encoding.md: on the whole XQuAD-R pool and on MLQA-R, every Mono / Cross / Multi mAP
# within 0.002 with no significant paired difference, MaxRankDist within 1%). Both bf16 variants differ
# significantly on XQuAD-R Multi (+0.0002 / +0.0003 mAP, Holm p < 0.05), so ``auto`` picks them only when bf16 is
# asked for.
BY_SPEED = (("openvino", "bf16"), ("torch", "bf16"), ("onnx", "int8"), ("openvino", "fp32"), ("torch", "fp32"),
            ("onnx", "fp32"))
FAITHFUL = frozenset({("openvino", "fp32"), ("torch", "fp32")})
AUTO = "auto"


def choose_variant(backend: str = AUTO, precision: str = AUTO, device: str = "cpu",
                   sparse: bool = False) -> tuple[str, str, list[str]]:
    """Resolve ``"auto"`` in ``backend`` / ``precision``. Returns (backend, precision, why faster ones were passed
    over). ``precision="auto"`` means the fastest variant faithful to torch fp32 that runs here (fp32 for a backend
    with no measured faithful variant); ``backend="auto"`` with a precision, the fastest backend for it. On a GPU
    auto is torch (faithfulness was measured on this CPU only); a sparse attention pattern runs on torch only.
    A variant given in full is only checked (``BackendError`` naming the fix)."""
    if backend != AUTO and precision != AUTO:
        check_backend(backend, precision, device)
        return backend, precision, []
    if str(device) != "cpu":
        chosen = (backend if backend != AUTO else "torch", precision if precision != AUTO else "fp32")
        check_backend(*chosen, device)
        return (*chosen, [])
    if precision == AUTO and backend != AUTO and not any(b == backend for b, _ in FAITHFUL):
        precision = "fp32"  # no variant of this backend was measured faithful: its exact one
    skipped: list[str] = []
    for candidate in BY_SPEED:
        if backend not in (AUTO, candidate[0]) or precision not in (AUTO, candidate[1]):
            continue
        if precision == AUTO and candidate not in FAITHFUL:
            continue
        if sparse and candidate[0] != "torch":
            skipped.append(f"{candidate[0]} {candidate[1]}: sparse attention patterns run on torch only")
            continue
        try:
            check_backend(*candidate, device)
        except BackendError as e:
            skipped.append(f"{candidate[0]} {candidate[1]}: {e}")
            continue
        return (*candidate, skipped)
    raise BackendError(f"no backend / precision runs here for backend={backend!r}, precision={precision!r}: "
                       + "; ".join(skipped))


def has_sparse_pattern(model) -> bool:
    """Whether a sentence-transformers model's transformer has a sparse attention pattern (torch only)."""
    try:
        config = getattr(getattr(model[0], "model", None), "config", None)
    except (TypeError, IndexError, KeyError):
        return False
    attention = getattr(config, "mlret_attention", None)
    return bool(attention) and attention.get("kind") != "dense"


def resolve_variant(model, backend: str, precision: str, name: str) -> tuple[str, str]:
    """``choose_variant`` for ``model`` (its device and pattern), logged: INFO, or a WARNING naming what to
    install / change when a faster faithful variant was passed over."""
    chosen_backend, chosen_precision, skipped = choose_variant(backend, precision, str(getattr(model, "device", "cpu")),
                                                               has_sparse_pattern(model))
    if AUTO in (backend, precision):
        fixable = [reason for reason in skipped if "pip install" in reason]  # a missing package: worth a warning
        message = (f"{name}: encoding with {chosen_backend} {chosen_precision} (auto: the fastest variant faithful "
                   f"to torch fp32 here; --backend torch --precision fp32 gives the reference numbers)")
        if fixable:
            log.warning("%s. Faster faithful variants passed over: %s", message, "; ".join(fixable))
        else:
            log.info(message)
    return chosen_backend, chosen_precision


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "none"


# --- the stand-in for the transformer -------------------------------------------------------------------------------

class RuntimeModel(nn.Module):
    """Stands in for the transformers model inside sentence-transformers' ``Transformer`` module and returns
    its ``last_hidden_state``. ``runtime``: {"backend", "precision", ...}, part of the embedding cache key."""

    def __init__(self, config, runtime: dict):
        super().__init__()
        self.config = config
        self.runtime = dict(runtime)

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32


class AutocastModel(RuntimeModel):
    """torch bf16: the original transformer, run under ``torch.autocast`` (weights stay fp32; matmuls run in
    bf16, layer norms and softmax in fp32), its output returned in fp32."""

    def __init__(self, inner: nn.Module, runtime: dict):
        super().__init__(inner.config, runtime)
        self.inner = inner

    @property
    def device(self) -> torch.device:
        return next(self.inner.parameters()).device

    def save_pretrained(self, *args, **kwargs) -> None:  # bf16 is a way of running: the saved weights are fp32
        self.inner.save_pretrained(*args, **kwargs)

    def forward(self, **kwargs) -> Any:
        with torch.autocast(self.device.type, dtype=torch.bfloat16):
            out = self.inner(**kwargs)
        out.last_hidden_state = out.last_hidden_state.float()
        return out


class ExportedModel(RuntimeModel):
    """An exported transformer run by another runtime. ``source_digest`` (sha256 of the weights it was exported
    from) is kept as a buffer, so the model's weights hash still names its weights."""

    def __init__(self, config, runtime: dict, source_digest: str, input_names: list[str], path: Path, threads: int):
        super().__init__(config, runtime)
        self.input_names, self.path, self.threads, self._runner = list(input_names), str(path), threads, None
        self.register_buffer("source_digest", torch.tensor(list(bytes.fromhex(source_digest)), dtype=torch.uint8))

    def __getstate__(self):  # sessions do not pickle: an encoding worker opens its own on first use
        state = self.__dict__.copy()
        state["_runner"] = None
        return state

    def save_pretrained(self, *args, **kwargs) -> None:
        raise BackendError(f"a model running on the {self.runtime['backend']} backend cannot be saved; save the "
                           "torch model (before apply_backend) instead")

    def forward(self, **kwargs) -> Any:
        from transformers.modeling_outputs import BaseModelOutput

        missing = [n for n in self.input_names if kwargs.get(n) is None]
        if missing:
            raise ValueError(f"{type(self).__name__}: the export takes {self.input_names}; {missing} missing")
        feeds = {n: kwargs[n].cpu().numpy().astype("int64") for n in self.input_names}
        return BaseModelOutput(last_hidden_state=torch.from_numpy(self.run(feeds)))

    def run(self, feeds: dict):
        raise NotImplementedError


class OnnxModel(ExportedModel):
    """The transformer exported to ONNX, run by ONNX Runtime's CPU provider."""

    def run(self, feeds: dict):
        if self._runner is None:
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = self.threads or torch.get_num_threads()
            self._runner = ort.InferenceSession(self.path, options, providers=["CPUExecutionProvider"])
        return self._runner.run(None, feeds)[0]


class OpenVinoModel(ExportedModel):
    """The transformer converted to OpenVINO IR, compiled for the CPU with the precision as inference hint."""

    def run(self, feeds: dict):
        if self._runner is None:
            import openvino as ov

            config = {"INFERENCE_PRECISION_HINT": {"fp32": "f32", "bf16": "bf16"}[self.runtime["precision"]],
                      "INFERENCE_NUM_THREADS": str(self.threads or torch.get_num_threads())}
            self._runner = ov.Core().compile_model(self.path, "CPU", config)
        return self._runner(feeds)[self._runner.output(0)].copy()


# --- exports in the model cache -------------------------------------------------------------------------------------

def exports_dir(cache_dir: str | Path | None = None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    from ir_datasets.util import home_path

    return home_path() / "mlret" / "models" / "exports"


def export_key(source_digest: str, backend: str, precision: str, input_names: list[str]) -> dict:
    """What an export depends on: the source weights, backend, precision, inputs and library versions. OpenVINO's
    IR is fp32 for every precision (bf16 is a hint when it is compiled), so its exports share one key."""
    libraries = ["torch", "transformers"] + (["onnx", "onnxruntime"] if backend == "onnx" else ["openvino"])
    return {"format": EXPORT_FORMAT, "source": source_digest, "backend": backend,
            "precision": precision if backend == "onnx" else "fp32", "inputs": list(input_names),
            "versions": {lib: _version(lib) for lib in libraries}}


def _folder(key: dict, root: Path) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return root / f"{key['backend']}-{key['precision']}-{key['source'][:12]}-{digest}"


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _valid(folder: Path, key: dict) -> bool:
    """A finished export whose files still match the manifest; a damaged one is warned about and deleted."""
    manifest = folder / "manifest.json"
    if not folder.is_dir():
        return False
    try:
        recorded = json.loads(manifest.read_text())
        problems = [name for name, sha in recorded["files"].items()
                    if not (folder / name).is_file() or _file_sha256(folder / name) != sha]
        ok = recorded["key"] == key and not problems
    except (OSError, ValueError, KeyError, TypeError) as e:
        problems, ok = [f"manifest.json ({e})"], False
    if not ok:
        warnings.warn(f"export {folder} is damaged or incomplete ({', '.join(problems) or 'another key'}); deleting "
                      "and rebuilding it", CorruptExport, stacklevel=4)
        shutil.rmtree(folder, ignore_errors=True)
    return ok


def build_export(hf_model: nn.Module, example: dict[str, torch.Tensor], key: dict, root: Path) -> Path:
    """The export folder for ``key``, built now if it is missing or damaged (atomically, in a staging folder)."""
    folder = _folder(key, root)
    if _valid(folder, key):
        return folder
    root.mkdir(parents=True, exist_ok=True)
    remove_stale(folder, "export")
    tmp = staging_path(folder)
    tmp.mkdir()
    try:
        log.warning("exporting the model to %s %s (once; cached in %s)", key["backend"], key["precision"], folder)
        files = _export(hf_model, example, key, tmp)
        manifest = {"key": key, "files": {name: _file_sha256(tmp / name) for name in files}}
        atomic_write_text(tmp / "manifest.json", json.dumps(manifest, indent=1), fsync=True)
        publish(tmp, folder, lambda done: _valid(done, key), "export")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


class _LastHiddenState(nn.Module):
    def __init__(self, hf_model: nn.Module, input_names: list[str]):
        super().__init__()
        self.hf_model, self.input_names = hf_model, input_names

    def forward(self, *inputs):
        return self.hf_model(**dict(zip(self.input_names, inputs))).last_hidden_state


def _export(hf_model: nn.Module, example: dict[str, torch.Tensor], key: dict, out: Path) -> list[str]:
    # Tracing warns that transformers' mask code takes Python branches on shapes: with a padded example they
    # are the general ones (mask applied, not causal), and the exports equal torch on other shapes (tested).
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _export_files(_LastHiddenState(hf_model, key["inputs"]).eval(),
                             tuple(example[n] for n in key["inputs"]), key, out)


def _export_files(wrapped: nn.Module, args: tuple, key: dict, out: Path) -> list[str]:
    names = key["inputs"]
    if key["backend"] == "openvino":
        import openvino as ov

        converted = ov.convert_model(wrapped, example_input=args)
        for i, name in enumerate(names):
            converted.inputs[i].get_tensor().set_names({name})
        ov.save_model(converted, str(out / "model.xml"), compress_to_fp16=False)
        return ["model.xml", "model.bin"]
    fp32 = out / ("model.onnx" if key["precision"] == "fp32" else "model-fp32.onnx")
    axes = {n: {0: "batch", 1: "sequence"} for n in names} | {"last_hidden_state": {0: "batch", 1: "sequence"}}
    torch.onnx.export(wrapped, args, str(fp32), input_names=names, output_names=["last_hidden_state"],
                      dynamic_axes=axes, opset_version=18, dynamo=False)
    if key["precision"] == "fp32":
        return ["model.onnx"]
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = out / "model-prepared.onnx"
    quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
    quantize_dynamic(str(prepared), str(out / "model.onnx"), per_channel=True, weight_type=QuantType.QInt8)
    fp32.unlink()
    prepared.unlink()
    return ["model.onnx"]


# --- applying a backend to a sentence-transformers model -----------------------------------------------------------

def runtime_of(model) -> dict | None:
    """{"backend", "precision"} of a model whose transformer runs on another backend, else None (torch fp32)."""
    try:
        module = model[0]
    except (TypeError, IndexError, KeyError):  # not a sentence-transformers model, or an empty one
        return None
    return getattr(getattr(module, "model", None), "runtime", None)


def remove_autocast(model):
    """Undo ``apply_backend(model, "torch", "bf16")`` in place (its weights were never changed); returns the model.
    Needed before anything that reads or writes the weights by name (WiSE-FT, load_state_dict): the wrapper adds
    a level to every name. Exported backends hold no torch weights: an error."""
    runtime = runtime_of(model)
    if runtime is None:
        return model
    if not isinstance(model[0].model, AutocastModel):
        raise BackendError(f"the model runs on {runtime}, whose weights are not torch's; load it again instead")
    model[0].model = model[0].model.inner
    return model


def variant_of(model) -> tuple[str, str]:
    """(backend, precision) that ``model`` encodes with: its runtime's, else torch fp32."""
    runtime = runtime_of(model) or {"backend": "torch", "precision": "fp32"}
    return runtime["backend"], runtime["precision"]


def apply_backend(model, backend: str = "torch", precision: str = "fp32", cache_dir: str | Path | None = None,
                  threads: int | None = None):
    """Run ``model``'s transformer on ``backend`` in ``precision`` (in place; returns the model). torch fp32 leaves
    the model as it is. The model must hold a plain transformers model in its first module (sentence-
    transformers' ``Transformer``); patterns of swappable attention stay on torch."""
    from mlret_plugin.encoding.fingerprint import weights_hash

    check_backend(backend, precision, str(getattr(model, "device", "cpu")))
    if (backend, precision) == ("torch", "fp32"):
        return model
    if runtime_of(model) is not None:
        raise BackendError(f"the model already runs on {runtime_of(model)}; load it again to choose another backend")
    module = model[0]
    hf_model = getattr(module, "model", None)
    if not isinstance(hf_model, nn.Module) or not hasattr(hf_model, "config"):
        raise BackendError(f"apply_backend needs a sentence-transformers model whose first module holds a transformers "
                           f"model; got {type(module).__name__}")
    runtime = {"backend": backend, "precision": precision}
    attention = getattr(hf_model.config, "mlret_attention", None)
    if backend != "torch" and attention and attention.get("kind") != "dense":
        raise BackendError(f"the model has the sparse attention pattern {attention['kind']}; sparse patterns run on "
                           "torch only: use --backend torch (bf16 works there)")
    if backend == "torch":  # bf16
        module.model = AutocastModel(hf_model, runtime)
        return model
    hf_model.eval()
    # Two inputs of different lengths: the traced graph must take the padding path of the attention mask.
    example = dict(model.tokenizer(["query: an example", "passage: a longer example, with a pair"],
                                   ["a", "its context, which is longer"], padding=True, return_tensors="pt"))
    if bool(example["attention_mask"].all()):
        raise BackendError("the export example has no padding; the exported graph would ignore attention masks")
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in example]
    digest = weights_hash(hf_model)
    key = export_key(digest, backend, precision, names)
    folder = build_export(hf_model, example, key, exports_dir(cache_dir))
    cls, path = (OnnxModel, folder / "model.onnx") if backend == "onnx" else (OpenVinoModel, folder / "model.xml")
    module.model = cls(hf_model.config, {**runtime, "export": folder.name}, digest, names, path, threads or 0)
    return model


__all__ = ["AUTO", "BACKENDS", "BY_SPEED", "FAITHFUL", "PRECISIONS", "AutocastModel", "BackendError", "CorruptExport",
           "ExportedModel", "OnnxModel", "OpenVinoModel", "RuntimeModel", "apply_backend", "build_export", "check_backend",
           "choose_variant", "cpu_has_bf16", "export_key", "exports_dir", "has_sparse_pattern", "resolve_variant",
           "remove_autocast", "runtime_of", "variant_of"]
