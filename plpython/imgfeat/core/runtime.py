"""onnxruntime sessions: their options, the loaded model that feeds one, and the backend's
cache of them (an :class:`~imgfeat.core.cache.LruCache` by model name, reloaded when the
model's bytes or the session options change)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnxruntime as ort

from .cache import LruCache

DEFAULT_INTRA_OP_THREADS = 1
"""Default onnxruntime intra-op threads per backend: 1, so that several backends (or
parallel workers) featurizing at once do not oversubscribe the CPU. Raise
``imgfeat.intra_op_num_threads`` for a single large job on an otherwise idle server."""

INTRA_OP_SPINNING = False
"""Whether onnxruntime's intra-op threads busy-wait for work between operators
(``session.intra_op.allow_spinning``; onnxruntime's default is to spin). Off: in ``CALL
imgfeat.featurize`` the backend decodes the next batch and stores the last one while
onnxruntime runs, and spinning threads take the CPU that work needs; a session running alone
is slightly slower without spinning (the README's Performance section has the figures). With
one intra-op thread (the default, :data:`DEFAULT_INTRA_OP_THREADS`) there is no thread pool and
nothing spins."""

DEFAULT_CACHE_SIZE = 2
"""Default number of models a backend keeps loaded (``imgfeat.session_cache_size``)."""


@dataclass
class LoadedModel:
    """A session with what is needed to feed it: the registered model's name, the sha256 of its
    bytes, its input and output tensors, whether its batch is fixed to 1, its precision, and the
    engine and route that run it (:func:`load`)."""

    name: str
    sha256: str
    session: Any
    """An onnxruntime ``InferenceSession``, or an :class:`~imgfeat.core.engines.OpenVinoSession`."""
    input_name: str
    output_name: str
    fixed_batch: bool
    load_seconds: float = 0.0
    precision: str = "fp32"
    engine: str = "onnxruntime"
    route: str = "cpu"
    """``cpu`` (onnxruntime's CPU execution provider), ``plugin`` (onnxruntime's OpenVINO
    execution provider plugin) or ``runtime`` (OpenVINO's own API)."""

    def threads(self) -> int:
        """The intra-op threads the session runs on (OpenVINO's ``INFERENCE_NUM_THREADS``, or
        onnxruntime's ``intra_op_num_threads``; 0: the engine's default)."""
        own = getattr(self.session, "threads", None)
        if own is not None:
            return int(own())
        return int(self.session.get_session_options().intra_op_num_threads)

    def kernels(self) -> dict[str, int] | None:
        """Convolution and matrix-product kernels by type (OpenVINO's own API only), else None."""
        kernels = getattr(self.session, "kernels", None)
        return kernels() if kernels is not None else None

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


def load(info: Any, model: str | bytes, intra_op_threads: int, inter_op_threads: int) -> LoadedModel:
    """The session for a registered model (``info``: a :class:`~imgfeat.core.model_info.ModelInfo`)
    at the precision the catalog records, on the first of its engines this server has
    (:mod:`imgfeat.core.engines`). fp32 models run on onnxruntime's CPU provider exactly as
    :func:`create_session` runs them.

    Raises:
        EngineUnavailableError: none of the model's engines can run it here (the error of
            the last one says what is missing); never a silent change of engine or precision.
    """
    from . import engines
    from .errors import EngineUnavailableError, ModelError

    precision = getattr(info, "precision", "fp32")
    chosen: list[str] = list(getattr(info, "engines", ("onnxruntime",)))
    failure: Exception | None = None
    for engine in chosen:
        if engine == "onnxruntime":
            if precision == "bf16":
                raise EngineUnavailableError("onnxruntime's CPU provider has no bf16 kernels")
            session, route = create_session(model, intra_op_threads, inter_op_threads), "cpu"
        elif engine == "openvino":
            try:
                session, route = engines.openvino_session(
                    model, precision, intra_op_threads, session_options(intra_op_threads, inter_op_threads))
            except EngineUnavailableError as exc:
                failure = exc
                continue
        else:
            raise ModelError(f"unknown engine {engine!r}", hint=f"one of {', '.join(engines.ENGINES)}")
        return LoadedModel(
            name=info.name, sha256=info.sha256, session=session, input_name=info.input_name,
            output_name=info.output_name, fixed_batch=info.fixed_batch, precision=precision, engine=engine,
            route=route,
        )
    assert failure is not None
    raise failure


class SessionCache(LruCache[LoadedModel]):
    """The backend's loaded models, by name: a :class:`~imgfeat.core.cache.LruCache` whose
    version is the model's sha256, input and output names and the session options."""

    def get(self, name: str, key: str, load: Callable[[], LoadedModel]) -> LoadedModel:  # type: ignore[override]
        """The cached model if its ``key`` matches, else ``load()`` it (timing the load)."""

        def timed() -> LoadedModel:
            started = time.perf_counter()
            model = load()
            model.load_seconds = time.perf_counter() - started
            return model

        return super().get(name, key, timed)

    def info(self) -> dict[str, Any]:
        """JSON-able state for ``imgfeat.python_info()``."""
        return {
            **super().info(),
            "loaded": [
                {"name": m.name, "sha256": m.sha256, "load_seconds": round(m.load_seconds, 4),
                 "precision": m.precision, "engine": m.engine, "route": m.route, "threads": m.threads(),
                 "kernels": m.kernels()}
                for m in self.values()
            ],
        }


def versions() -> dict[str, Any]:
    """onnxruntime version, providers and the machine's CPU count."""
    return {
        "onnxruntime": ort.__version__,
        "providers": ort.get_available_providers(),
        "cpu_count": os.cpu_count(),
    }
