"""The losses of hybrid training: in-batch negatives, cached for large batches, with an optional distillation term.

- ``mnrl``: sentence-transformers' MultipleNegativesRankingLoss (each query against every passage of the batch).
- ``cached-mnrl``: its GradCache variant (CachedMultipleNegativesRankingLoss): the same loss over the whole
  logical batch the sampler composed (64-256 pairs), embedded in mini-batches of ``mini_batch_size`` so memory
  stays bounded. The contrast is still the whole batch: the sampler's X-X / X-Y batch is never cut.
- ``symmetric-mnrl``: query -> passages plus passage -> queries (CLIP's loss, for image-text models).

Under the Trainer's ``bf16`` the cached loss replays its mini-batches (forward with gradients, then backward) in
bf16 too: sentence-transformers runs that replay inside the backward pass, outside the Trainer's autocast, so
without ``AutocastReplay`` two thirds of the compute ran in fp32 and its gradients belonged to fp32 embeddings
while the cached ones came from bf16 embeddings.

``distill_weight > 0`` adds ``distill_weight * mean(1 - cos(e, e0))`` over every embedding of the batch, where
``e0`` is the embedding of the same input by a frozen copy of the model as it was before training: a
fine-tune then moves the embedding space only as far as the contrastive signal pays for (a known remedy for a
fine-tune that loses zero-shot quality).
"""
from __future__ import annotations

import copy

import torch
from torch import nn

LOSSES = ("mnrl", "cached-mnrl", "symmetric-mnrl")


def frozen_copy(model) -> nn.Module:
    """A copy of ``model`` that never trains (eval mode, no gradients): the distillation reference."""
    teacher = copy.deepcopy(model)
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def _embed(model, features: list[dict]) -> list[torch.Tensor]:
    """Each column's sentence embeddings; the feature dicts are copied because modules write into them."""
    return [model(dict(f))["sentence_embedding"] for f in features]


def _distance(embeddings: list[torch.Tensor], reference: list[torch.Tensor]) -> torch.Tensor:
    pairs = [(e, r.to(e.dtype)) for e, r in zip(embeddings, reference)]
    return torch.cat([1 - nn.functional.cosine_similarity(e, r, dim=-1) for e, r in pairs]).mean()


def _autocast_now() -> tuple[str, torch.dtype] | None:
    """(device type, dtype) of the autocast active in this thread, or None."""
    for device in ("cpu", "cuda"):
        if torch.is_autocast_enabled(device):
            return device, torch.get_autocast_dtype(device)
    return None


def _mnrl_classes():
    from sentence_transformers.sentence_transformer.losses import (
        CachedMultipleNegativesRankingLoss,
        MultipleNegativesRankingLoss,
    )

    class AutocastReplay(CachedMultipleNegativesRankingLoss):
        """The cached loss whose gradient replay runs under the autocast of its forward pass (see the module doc)."""

        _autocast: tuple | None = None

        def forward(self, sentence_features, labels):
            self._autocast = _autocast_now()
            return super().forward(sentence_features, labels)

        def embed_minibatch_iter(self, *args, **kwargs):
            inner = super().embed_minibatch_iter(*args, **kwargs)
            with_grad = kwargs.get("with_grad", args[1] if len(args) > 1 else False)
            if not (with_grad and self._autocast):
                yield from inner
                return
            device, dtype = self._autocast
            while True:  # autocast around each mini-batch's forward only, not the caller's backward between them
                with torch.autocast(device, dtype=dtype):
                    item = next(inner, None)
                if item is None:
                    return
                yield item

    class DistilledMNRL(MultipleNegativesRankingLoss):
        """MultipleNegativesRankingLoss plus the distillation term (see the module doc)."""

        def __init__(self, model, teacher, distill_weight: float, **kwargs):
            super().__init__(model, **kwargs)
            self.teacher, self.distill_weight = teacher, float(distill_weight)

        def forward(self, sentence_features, labels):
            features = list(sentence_features)
            with torch.no_grad():
                reference = _embed(self.teacher, features)
            embeddings = _embed(self.model, features)
            self.last_distill = _distance(embeddings, reference)
            return self.compute_loss_from_embeddings(embeddings, labels) + self.distill_weight * self.last_distill

    class DistilledCachedMNRL(AutocastReplay):
        """CachedMultipleNegativesRankingLoss plus the distillation term, added to the cached loss on the
        whole logical batch (its gradient joins the cached embedding gradients)."""

        def __init__(self, model, teacher, distill_weight: float, **kwargs):
            super().__init__(model, **kwargs)
            self.teacher, self.distill_weight = teacher, float(distill_weight)
            self._reference = None

        def forward(self, sentence_features, labels):
            features = list(sentence_features)
            with torch.no_grad():
                self._reference = [torch.cat([self.teacher(dict(_slice(f, s, e)))["sentence_embedding"]
                                              for s, e in _chunks(f, self.mini_batch_size)]) for f in features]
            try:
                return super().forward(features, labels)
            finally:
                self._reference = None

        def calculate_loss(self, reps, labels=None, *, with_backward: bool = False):
            loss = super().calculate_loss(reps, labels, with_backward=with_backward)
            if self._reference is None:
                return loss
            distill = self.distill_weight * _distance([torch.cat(r) for r in reps], self._reference)
            self.last_distill = distill.detach() / self.distill_weight
            if with_backward:
                distill.backward()
                return loss + distill.detach()
            return loss + distill

    return MultipleNegativesRankingLoss, AutocastReplay, DistilledMNRL, DistilledCachedMNRL


def _chunks(features: dict, size: int) -> list[tuple[int, int]]:
    n = len(next(v for v in features.values() if isinstance(v, torch.Tensor)))
    return [(s, min(s + size, n)) for s in range(0, n, size)]


def _slice(features: dict, start: int, end: int) -> dict:
    return {k: v[start:end] if isinstance(v, torch.Tensor) and v.dim() > 0 else v for k, v in features.items()}


def make_loss(model, name: str = "mnrl", mini_batch_size: int = 32, distill_weight: float = 0.0, teacher=None,
              scale: float = 20.0):
    """The training loss ``name`` (``LOSSES``); with ``distill_weight`` > 0, the distillation term against
    ``teacher`` (default: a frozen copy of ``model`` made now, i.e. before training). ``scale``: the inverse
    temperature of the in-batch softmax (sentence-transformers' default 20, i.e. 0.05; e5 was trained at 0.01)."""
    mnrl, cached, distilled, distilled_cached = _mnrl_classes()
    if name not in LOSSES:
        raise ValueError(f"loss={name!r}; expected one of {LOSSES}")
    if distill_weight < 0:
        raise ValueError(f"distill_weight={distill_weight}; expected >= 0")
    if not scale > 0:
        raise ValueError(f"scale={scale}; expected > 0 (the inverse softmax temperature, e.g. 20)")
    if distill_weight and name == "symmetric-mnrl":
        raise ValueError("distill_weight applies to the text losses mnrl and cached-mnrl")
    if distill_weight:
        teacher = teacher if teacher is not None else frozen_copy(model)
        if name == "cached-mnrl":
            return distilled_cached(model, teacher, distill_weight, mini_batch_size=mini_batch_size, scale=scale)
        return distilled(model, teacher, distill_weight, scale=scale)
    if name == "mnrl":
        return mnrl(model, scale=scale)
    if name == "symmetric-mnrl":
        return mnrl(model, directions=("query_to_doc", "doc_to_query"), scale=scale)
    return cached(model, mini_batch_size=mini_batch_size, scale=scale)


__all__ = ["LOSSES", "frozen_copy", "make_loss"]
