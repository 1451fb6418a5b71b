"""A CLIP-style dual encoder in sentence-transformers' own terms: a ``Router`` routing by modality.

- text route: any sentence-transformers text model's modules (e.g. offline-e5's Transformer + Pooling),
  then a ``Dense`` projection to the shared space;
- image route: ``TinyImageEncoder``, a small CNN in plain torch (torchvision is not used) whose last layer
  projects to the same space.
sentence-transformers infers the modality of each input (PIL image or image path -> "image", str -> "text"),
so ``model.encode(captions)`` and ``model.encode(images)`` pick their route, the trainer's collator does the
same per column, and ``model.save`` / ``SentenceTransformer(path)`` round-trip (Router saves each route).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image
from sentence_transformers.base.modules import Dense, InputModule, Router
from torch import nn

from mlret_plugin.training.images import load_image
from mlret_plugin.model import CLASS_REF
from mlret_plugin.prompts import model_prompt


class TinyImageEncoder(InputModule):
    """A small CNN image tower: RGB resized to ``image_size``, strided 3x3 convolutions, flattened (so the
    position of a shape survives, unlike global pooling), and a linear projection to ``embedding_dimension``."""

    config_keys = ["embedding_dimension", "image_size", "channels"]
    save_in_root = False

    def __init__(self, embedding_dimension: int = 256, image_size: int = 48, channels: Sequence[int] = (16, 32, 32)):
        super().__init__()
        if image_size % (2 ** len(channels)):
            raise ValueError(f"image_size={image_size} must be divisible by 2**{len(channels)} (one halving per conv)")
        self.embedding_dimension, self.image_size, self.channels = int(embedding_dimension), int(image_size), list(channels)
        layers, prev = [], 3
        for c in self.channels:
            layers += [nn.Conv2d(prev, c, kernel_size=3, stride=2, padding=1), nn.GELU()]
            prev = c
        side = image_size // 2 ** len(channels)
        self.net = nn.Sequential(*layers, nn.Flatten(), nn.Linear(prev * side * side, self.embedding_dimension))

    @property
    def modalities(self) -> list[str]:
        return ["image"]

    @property
    def tokenizer(self):  # sentence-transformers asks input modules for one; images have none
        return None

    def preprocess(self, inputs: Sequence[Any], prompt: str | None = None, **kwargs) -> dict[str, torch.Tensor]:
        if prompt:
            raise ValueError(f"TinyImageEncoder got the text prompt {prompt!r} for images; encode images without "
                             "prompt / prompt_name (prompts apply to the text route only)")
        pixels = np.stack([self._pixels(x, i) for i, x in enumerate(inputs)])
        return {"pixel_values": torch.from_numpy(pixels)}

    def _pixels(self, source: Any, i: int) -> np.ndarray:
        if not isinstance(source, (Image.Image, str)):
            raise ValueError(f"TinyImageEncoder: input {i} is a {type(source).__name__}; expected a PIL image or a path")
        image = load_image(source, where=f"image input {i}").resize((self.image_size, self.image_size), Image.BILINEAR)
        return (np.asarray(image, dtype=np.float32) / 127.5 - 1.0).transpose(2, 0, 1)

    def forward(self, features: dict[str, Any], **kwargs) -> dict[str, Any]:
        pixels = features["pixel_values"].to(next(self.parameters()).device)
        features["sentence_embedding"] = self.net(pixels)
        return features

    def get_embedding_dimension(self) -> int:
        return self.embedding_dimension

    def save(self, output_path: str, *args, safe_serialization: bool = True, **kwargs) -> None:
        self.save_config(output_path)
        self.save_torch_weights(output_path, safe_serialization=safe_serialization)

    @classmethod
    def load(cls, model_name_or_path: str, subfolder: str = "", token=None, cache_folder=None, revision=None,
             local_files_only: bool = False, **kwargs):
        hub = dict(subfolder=subfolder, token=token, cache_folder=cache_folder, revision=revision,
                   local_files_only=local_files_only)
        model = cls(**cls.load_config(model_name_or_path, **hub))
        return cls.load_torch_weights(model_name_or_path=model_name_or_path, model=model, **hub)


class LockedTextTower(InputModule):
    """A frozen text encoder (its Transformer + Pooling modules) whose sentence embeddings are computed once
    per distinct tokenized input, in eval mode (no dropout), and reused: a locked tower (as in LiT), so a
    training step costs the projection and the image tower only. ``cache`` may be shared between towers
    with the same weights (e.g. several runs of one experiment in one process)."""

    save_in_root = False
    config_file_name = "locked_text_tower.json"

    def __init__(self, modules: Sequence[nn.Module], cache: dict | None = None):
        super().__init__()
        self.inner = nn.Sequential(*modules)
        for p in self.inner.parameters():
            p.requires_grad_(False)
        self.cache = {} if cache is None else cache

    @property
    def modalities(self) -> list[str]:
        return ["text"]

    @property
    def tokenizer(self):
        return self.inner[0].tokenizer

    @property
    def max_seq_length(self):
        return self.inner[0].max_seq_length

    @max_seq_length.setter
    def max_seq_length(self, value) -> None:
        self.inner[0].max_seq_length = value

    def preprocess(self, inputs: Sequence[Any], prompt: str | None = None, **kwargs) -> dict[str, Any]:
        return self.inner[0].preprocess(inputs, prompt=prompt, **kwargs)

    def forward(self, features: dict[str, Any], **kwargs) -> dict[str, Any]:
        ids, mask = features["input_ids"], features["attention_mask"]
        keys = [tuple(i[m.bool()].tolist()) for i, m in zip(ids, mask)]
        missing = [k for k in dict.fromkeys(keys) if k not in self.cache]
        if missing:
            rows = torch.tensor([keys.index(k) for k in missing], device=ids.device)
            sub = {k: v.index_select(0, rows) if isinstance(v, torch.Tensor) and v.shape[:1] == ids.shape[:1] else v
                   for k, v in features.items()}
            was_training = self.inner.training
            self.inner.eval()
            with torch.no_grad():
                for module in self.inner:
                    sub = module(sub, **kwargs)
            self.inner.train(was_training)
            for key, embedding in zip(missing, sub["sentence_embedding"]):
                self.cache[key] = embedding.detach()
        features["sentence_embedding"] = torch.stack([self.cache[k] for k in keys]).to(ids.device)
        return features

    def get_embedding_dimension(self) -> int:
        return next(m.get_embedding_dimension() for m in reversed(self.inner)
                    if getattr(m, "get_embedding_dimension", lambda: None)() is not None)

    def save(self, output_path: str, *args, safe_serialization: bool = True, **kwargs) -> None:
        import json
        import os

        names = [f"{i}_{type(m).__name__}" for i, m in enumerate(self.inner)]
        for name, module in zip(names, self.inner):
            os.makedirs(os.path.join(output_path, name), exist_ok=True)
            module.save(os.path.join(output_path, name), safe_serialization=safe_serialization)
        types = {name: f"{type(m).__module__}.{type(m).__name__}" for name, m in zip(names, self.inner)}
        with open(os.path.join(output_path, self.config_file_name), "w", encoding="utf-8") as f:
            json.dump({"modules": types}, f, indent=2)

    @classmethod
    def load(cls, model_name_or_path: str, subfolder: str = "", local_files_only: bool = False, **kwargs):
        import json
        from pathlib import Path

        from sentence_transformers.util import import_from_string

        folder = Path(model_name_or_path, subfolder)
        config = json.loads((folder / cls.config_file_name).read_text(encoding="utf-8"))
        modules = []
        for name, type_name in config["modules"].items():
            if not type_name.startswith("sentence_transformers."):
                raise ValueError(f"{folder / cls.config_file_name}: module {type_name!r} is not a sentence-transformers "
                                 "class; a locked text tower holds sentence-transformers modules only")
            modules.append(import_from_string(type_name).load(str(folder / name)))
        return cls(modules)


def build_dual_encoder(text_model, embedding_dimension: int = 256, image_encoder: TinyImageEncoder | None = None,
                       freeze_text_layers: int | None = None, device: str | None = "cpu", lock_text: bool = False,
                       text_cache: dict | None = None):
    """A SentenceTransformer whose Router sends text to ``text_model``'s modules + a Dense projection and
    images to ``image_encoder`` (a new ``TinyImageEncoder`` by default), both ``embedding_dimension`` wide.

    ``freeze_text_layers``: freeze the text tower's word embeddings and its first N transformer layers
    (all layers when N >= their number) to train fast on CPU; the projection always trains. The text
    model's ``query`` prompt is kept (captions are queries); images get no prompt.
    ``lock_text``: the whole text tower is frozen and wrapped in ``LockedTextTower`` (embeddings computed once
    per distinct caption, without dropout; ``text_cache`` shares them between towers of the same weights)."""
    from sentence_transformers import SentenceTransformer

    text_modules = list(text_model.children())
    text_dim = text_model.get_embedding_dimension()
    if lock_text and freeze_text_layers is not None:
        raise ValueError("lock_text freezes the whole text tower; pass freeze_text_layers=None with it")
    projection = Dense(text_dim, embedding_dimension, bias=False, activation_function=nn.Identity())
    image_encoder = image_encoder or TinyImageEncoder(embedding_dimension)
    if image_encoder.get_embedding_dimension() != embedding_dimension:
        raise ValueError(f"image encoder dimension {image_encoder.get_embedding_dimension()} != {embedding_dimension}")
    if freeze_text_layers is not None:
        freeze_text_tower(text_modules[0], freeze_text_layers)
    if lock_text:
        text_modules = [LockedTextTower(text_modules, cache=text_cache)]
    router = Router({"text": [*text_modules, projection], "image": [image_encoder]},
                    route_mappings={(None, "text"): "text", (None, "image"): "image"})
    query_prompt, _ = model_prompt(text_model, "query")
    model = SentenceTransformer(modules=[router], device=device, similarity_fn_name="cosine",
                                prompts={"query": query_prompt} if query_prompt else None)
    return model


def freeze_text_tower(transformer, n_layers: int) -> int:
    """Freeze the embeddings and the first ``n_layers`` encoder layers of a Transformer module; returns how many
    layers were frozen. An architecture without ``embeddings`` / ``encoder.layer`` is an error."""
    hf = getattr(transformer, "auto_model", None) or getattr(transformer, "model", None)
    embeddings = getattr(hf, "embeddings", None)
    layers = getattr(getattr(hf, "encoder", None), "layer", None)
    if embeddings is None or layers is None:
        raise ValueError(f"freeze_text_layers: {type(hf).__name__} has no embeddings / encoder.layer to freeze; "
                         "pass freeze_text_layers=None")
    n = min(n_layers, len(layers))
    for module in [embeddings, *layers[:n]]:
        for p in module.parameters():
            p.requires_grad_(False)
    return n


IMAGE_ENCODER_TYPE = f"{TinyImageEncoder.__module__}.{TinyImageEncoder.__name__}"
# This package's own module classes a saved dual encoder may hold: the image tower, the locked text tower, and
# the swappable-attention Transformer that mlret_plugin.load_model gives a text model.
OWN_TYPES = (IMAGE_ENCODER_TYPE, f"{LockedTextTower.__module__}.{LockedTextTower.__name__}", CLASS_REF)


def is_dual_encoder_dir(path) -> bool:
    """True for a saved ``build_dual_encoder`` model (a Router whose routes use ``TinyImageEncoder``)."""
    import json
    from pathlib import Path

    configs = [*Path(path).glob("router_config.json"), *Path(path).glob("*/router_config.json")]
    return any(IMAGE_ENCODER_TYPE in json.loads(p.read_text()).get("types", {}).values() for p in configs)


def load_dual_encoder(path, device: str | None = "cpu"):
    """Load a saved dual encoder. sentence-transformers imports a module class outside its namespace only with
    ``trust_remote_code=True``; this sets it after checking that every such class in the saved Router is
    ``TinyImageEncoder``, ``LockedTextTower`` or ``AttentionSwapTransformer`` (this package's own code), so no
    other code is imported."""
    import json
    from pathlib import Path

    from sentence_transformers import SentenceTransformer

    configs = list(Path(path).glob("router_config.json")) + list(Path(path).glob("*/router_config.json"))
    if not configs:
        raise ValueError(f"{path}: no router_config.json; not a dual encoder saved by build_dual_encoder().save()")
    modules = json.loads((Path(path) / "modules.json").read_text())
    foreign = [m["type"] for m in modules if not m["type"].startswith("sentence_transformers.")]
    for config in configs:
        foreign += [t for t in json.loads(config.read_text())["types"].values()
                    if not t.startswith("sentence_transformers.") and t not in OWN_TYPES]
    if foreign:
        raise ValueError(f"{path}: references module classes {foreign} besides {list(OWN_TYPES)}; load it with "
                         "SentenceTransformer(path, trust_remote_code=True) if you trust that code")
    return SentenceTransformer(str(path), device=device, trust_remote_code=True, local_files_only=True)
