"""Multi-process / multi-GPU encoding on sentence-transformers' own pool (``start_multi_process_pool``).

``parse_devices("cuda:0,cuda:1")`` / ``parse_devices(processes=2)`` validate the user's choice up front
(a device that does not exist is an error naming what this machine has). ``EncodingPool`` starts ST's
worker processes lazily (a fully cached run never starts them) and stops them on ``close()``.

Inputs are sorted by length (ST's own key) and cut into chunks of whole batches before they go to the
workers, so every worker batch holds the same inputs as the single-process batch at that position:
results equal single-process encoding up to ties in ST's length key (see tests/test_encoding_pool.py).
CPU workers set torch's thread count to cores // workers as they start, so N workers do not oversubscribe
the cores (the count travels inside the pickled model: this process's environment is left alone).
"""
from __future__ import annotations

import atexit
import logging
import math
import os
import re
import types

import numpy as np
import torch

from mlret_plugin.compat import st_input_length

log = logging.getLogger(__name__)

_DEVICE = re.compile(r"^(cpu|mps|(cuda|npu|xpu)(:\d+)?)$")


def parse_devices(devices: str | list[str] | None = None, processes: int | None = None) -> list[str] | None:
    """The worker devices from ``devices="a,b"`` (or a list) or ``processes=N`` (N CPU workers); None = one process."""
    if devices is not None and processes is not None:
        raise ValueError("give devices (one worker per listed device) or processes=N (N CPU workers), not both")
    if processes is not None:
        if not isinstance(processes, int) or isinstance(processes, bool) or processes < 1:
            raise ValueError(f"processes must be an integer >= 1; got {processes!r}")
        return None if processes == 1 else ["cpu"] * processes
    if devices is None:
        return None
    items = [d.strip() for d in devices.split(",")] if isinstance(devices, str) else [str(d).strip() for d in devices]
    if not items or any(not d for d in items):
        raise ValueError(f"devices {devices!r}: expected a comma-separated list such as cuda:0,cuda:1 (no empty items)")
    for d in items:
        if not _DEVICE.match(d):
            raise ValueError(f"devices: {d!r} is not a device; expected cpu, cuda:N, npu:N, xpu:N or mps "
                             f"(e.g. cuda:0,cuda:1)")
        kind, _, index = d.partition(":")
        if kind == "cuda":
            count = torch.cuda.device_count() if torch.cuda.is_available() else 0
            if count == 0:
                raise ValueError(f"devices: {d!r} but this machine has no CUDA device (torch {torch.__version__}); "
                                 f"use processes=N (--processes N) for CPU workers")
            if index and int(index) >= count:
                raise ValueError(f"devices: {d!r} but this machine has {count} CUDA device(s): "
                                 f"{','.join(f'cuda:{i}' for i in range(count))}")
        elif kind == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise ValueError(f"devices: {d!r} but MPS is not available here")
        elif kind in ("npu", "xpu"):
            backend = getattr(torch, kind, None)
            if backend is None or not backend.is_available():
                raise ValueError(f"devices: {d!r} but torch has no available {kind.upper()} backend here")
    return items


_THREADS_ATTR = "_mlret_worker_threads"


def _set_worker_threads(n: int) -> "WorkerThreads":
    torch.set_num_threads(n)
    return WorkerThreads(n)


class WorkerThreads:
    """Set as an attribute of the model handed to the workers: unpickling it in a worker (spawned process)
    sets that process's torch thread count, before the worker encodes anything."""

    def __init__(self, n: int):
        self.n = n

    def __reduce__(self):
        return _set_worker_threads, (self.n,)


class EncodingPool:
    """sentence-transformers' multi-process pool for one model, started on first use."""

    def __init__(self, model, devices: list[str]):
        self.model = model
        self.devices = list(devices)
        self._pool = None

    @property
    def started(self) -> bool:
        return self._pool is not None

    def _start(self) -> None:
        cpu_workers = sum(1 for d in self.devices if d == "cpu")
        # Workers receive the model pickled; per-instance bound methods (e.g. the hybrid ``fit`` that
        # mlret_plugin.load_model installs, a lambda) cannot be pickled and are not needed to encode.
        bound = {k: v for k, v in vars(self.model).items() if isinstance(v, types.MethodType)}
        for name in bound:
            delattr(self.model, name)
        if cpu_workers:  # N workers share the cores instead of each taking all of them
            setattr(self.model, _THREADS_ATTR, WorkerThreads(max(1, (os.cpu_count() or 1) // cpu_workers)))
        try:
            log.info("starting %d encoding workers on %s", len(self.devices), ",".join(self.devices))
            self._pool = self.model.start_multi_process_pool(self.devices)
        finally:
            for name, method in bound.items():
                setattr(self.model, name, method)
            if cpu_workers:
                delattr(self.model, _THREADS_ATTR)
        atexit.register(self.close)

    def encode(self, inputs: list, batch_size: int, normalize: bool, show_progress_bar: bool = False) -> torch.Tensor:
        """[len(inputs), dim] float32 on CPU, in input order."""
        if not inputs:
            return torch.zeros(0, self.model.get_sentence_embedding_dimension() or 0)
        if self._pool is None:
            self._start()
        length = st_input_length(self.model)
        order = np.argsort([-length(x) for x in inputs], kind="stable")
        ordered = [inputs[i] for i in order]
        batches = math.ceil(len(ordered) / batch_size)
        per_chunk = max(1, math.ceil(batches / (4 * len(self.devices))))  # ~4 chunks per worker: balance
        out = self.model.encode(ordered, pool=self._pool, batch_size=batch_size, chunk_size=per_chunk * batch_size,
                                convert_to_tensor=True, normalize_embeddings=normalize,
                                show_progress_bar=show_progress_bar)
        result = torch.empty_like(out)
        result[torch.as_tensor(order)] = out
        return result.to(dtype=torch.float32)

    def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            self.model.stop_multi_process_pool(pool)
            atexit.unregister(self.close)
