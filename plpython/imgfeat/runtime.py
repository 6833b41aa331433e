"""onnxruntime sessions, cached per backend.

A PostgreSQL backend is one process that serves one connection, so a module-level cache
lives exactly as long as the connection. Sessions are keyed by model name and reloaded
only when the model's sha256 changes; the cache holds at most ``capacity`` sessions and
evicts the least recently used one.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnxruntime as ort

DEFAULT_INTRA_OP_THREADS = 1
"""Default onnxruntime intra-op threads per backend: 1, so that several backends (or
parallel workers) featurizing at once do not oversubscribe the CPU. Raise
``imgfeat.intra_op_num_threads`` for a single large job on an otherwise idle server."""

INTRA_OP_SPINNING = False
"""Whether onnxruntime's intra-op threads busy-wait for work between operators
(``session.intra_op.allow_spinning``; onnxruntime's default is to spin). Off: in ``CALL
imgfeat.featurize`` the backend decodes the next batch and stores the last one while
onnxruntime runs, and spinning threads take the CPU that work needs. Measured here (2 cores,
2 intra-op threads, batch 16, decoding CMU faces alongside): int8 resnet18 went from 0.86x to
0.92-0.96x of onnxruntime running alone, float32 resnet18 from 0.93x to 0.94x; a session
running alone at batch 1 is 1-5 % slower without spinning. With one intra-op thread (the
default, :data:`DEFAULT_INTRA_OP_THREADS`) there is no thread pool and nothing spins."""

DEFAULT_CACHE_SIZE = 2
"""Default number of models a backend keeps loaded (``imgfeat.session_cache_size``)."""


@dataclass
class LoadedModel:
    """An onnxruntime session with what is needed to feed it."""

    name: str
    sha256: str
    session: ort.InferenceSession
    input_name: str
    output_name: str
    fixed_batch: bool
    load_seconds: float
    meta: dict[str, Any] = field(default_factory=dict)
    cache_key: str = ""

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Features for a float32 NCHW batch: returns float32 [N, D].

        A model whose batch dimension is fixed to 1 runs one image at a time.
        """
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if self.fixed_batch and batch.shape[0] != 1:
            return np.concatenate([self.run(batch[i : i + 1]) for i in range(batch.shape[0])])
        out = self.session.run([self.output_name], {self.input_name: batch})[0]
        return out.reshape(out.shape[0], -1)


def session_options(intra_op_threads: int, inter_op_threads: int) -> ort.SessionOptions:
    """onnxruntime options: full graph optimisation, sequential execution, given threads (0 = onnxruntime's
    default), no spinning (:data:`INTRA_OP_SPINNING`)."""
    opts = ort.SessionOptions()
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if INTRA_OP_SPINNING else "0")
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.intra_op_num_threads = intra_op_threads
    opts.inter_op_num_threads = inter_op_threads
    opts.log_severity_level = 3
    return opts


def create_session(model: str | bytes, intra_op_threads: int, inter_op_threads: int) -> ort.InferenceSession:
    """An onnxruntime CPU session on a model file's path (preferred: onnxruntime reads it
    itself, so the caller never holds the bytes) or the model's bytes."""
    return ort.InferenceSession(
        model,
        sess_options=session_options(intra_op_threads, inter_op_threads),
        providers=["CPUExecutionProvider"],
    )


class SessionCache:
    """Least-recently-used cache of :class:`LoadedModel` keyed by model name."""

    def __init__(self, capacity: int = DEFAULT_CACHE_SIZE) -> None:
        self.capacity = capacity
        self._models: OrderedDict[str, LoadedModel] = OrderedDict()
        self.loads: dict[str, int] = {}
        self.evictions = 0

    def get(self, name: str, key: str, load: Callable[[], LoadedModel]) -> LoadedModel:
        """The cached model if its ``key`` (sha256 and session options) matches, else ``load()`` it
        (and evict the least recently used past capacity)."""
        cached = self._models.get(name)
        if cached is not None and cached.cache_key == key:
            self._models.move_to_end(name)
            return cached
        if cached is not None:
            del self._models[name]
        started = time.perf_counter()
        model = load()
        model.load_seconds = time.perf_counter() - started
        model.cache_key = key
        self._models[name] = model
        self.loads[name] = self.loads.get(name, 0) + 1
        self.shrink()
        return model

    def shrink(self, capacity: int | None = None) -> None:
        """Evict least recently used models until at most ``capacity`` (default: self.capacity) remain."""
        if capacity is not None:
            self.capacity = capacity
        while len(self._models) > max(self.capacity, 1):
            self._models.popitem(last=False)
            self.evictions += 1

    def info(self) -> dict[str, Any]:
        """JSON-able state for ``imgfeat.python_info()``."""
        return {
            "capacity": self.capacity,
            "loaded": [
                {"name": m.name, "sha256": m.sha256, "load_seconds": round(m.load_seconds, 4)}
                for m in self._models.values()
            ],
            "loads": dict(self.loads),
            "evictions": self.evictions,
        }


def versions() -> dict[str, Any]:
    """onnxruntime version, providers and the machine's CPU count."""
    return {
        "onnxruntime": ort.__version__,
        "providers": ort.get_available_providers(),
        "cpu_count": os.cpu_count(),
    }
