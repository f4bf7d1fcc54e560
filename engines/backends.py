"""Inference backends for any of our ONNX graphs: ONNX Runtime (CPU or CUDA) and TensorRT.

Every backend takes the same feeds and gives the same outputs: a dict input name → numpy array
(float32 for our graphs, batch dimension first) in, a list of numpy arrays in ``output_names``
order out, so the runtime batches the frames of every due session into one call whatever runs
it. ``open_backend(path, "auto")`` picks TensorRT (a cached plan, built by
``facecast build-engines``), else ONNX Runtime with CUDA, else ONNX Runtime on CPU.

No torch. ``tensorrt`` and ``cuda-python`` are imported only when a TensorRT backend is opened.
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import numpy as np

from engines.tensorrt.build import (
    TensorRTUnavailable,
    cuda_check,
    current_key,
    find_plan,
    import_cudart,
    import_tensorrt,
    read_sidecar,
)

BackendKind = Literal["auto", "onnxruntime", "tensorrt", "cuda"]
BUILD_HINT = "run `facecast build-engines`"


@runtime_checkable
class Backend(Protocol):
    """One loaded graph, callable with a batch.

    Attributes:
        name: what runs it ("onnxruntime-cpu", "onnxruntime-cuda", "tensorrt").
        input_names: the graph's inputs, in graph order.
        output_names: the graph's outputs, in the order ``run`` returns them.
    """

    name: str
    input_names: list[str]
    output_names: list[str]

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Run one batch: every input by name (batch first) → every output, in order."""
        ...


def _check_feeds(feeds: dict[str, np.ndarray], input_names: list[str]) -> None:
    missing = [n for n in input_names if n not in feeds]
    extra = [n for n in feeds if n not in input_names]
    if missing or extra:
        raise ValueError(f"feeds must be exactly {input_names}; missing {missing}, "
                         f"unexpected {extra}")


def ort_cuda_available() -> bool:
    """Whether this onnxruntime build has the CUDA execution provider."""
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


class OrtBackend:
    """An ONNX Runtime session (thread-safe to share, as ORT sessions are).

    Args:
        path: the .onnx file.
        device: "cpu", or "cuda" for the CUDA execution provider (CPU kept as the fallback for
            ops it lacks).
        threads: intra-op threads (default: ONNX Runtime's choice, or the cores of this
            process's CPU affinity when that is narrower than the machine).

    Raises ``FileNotFoundError`` for a missing file, ``RuntimeError`` when "cuda" is asked for
    and this onnxruntime has no CUDA provider, ``ValueError`` for another device.
    """

    def __init__(self, path: str | Path, device: Literal["cpu", "cuda"] = "cpu",
                 threads: int | None = None) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"ONNX file not found: {self.path}")
        if device == "cuda":
            if not ort_cuda_available():
                raise RuntimeError("onnxruntime has no CUDAExecutionProvider here (available: "
                                   f"{ort.get_available_providers()}); install onnxruntime-gpu "
                                   "on a machine with an NVIDIA GPU, or use device='cpu'")
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        elif device == "cpu":
            providers = ["CPUExecutionProvider"]
        else:
            raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
        options = ort.SessionOptions()
        usable = len(os.sched_getaffinity(0))
        if threads is None and usable < (os.cpu_count() or usable):
            # ONNX Runtime's default pool pins a thread to every physical core and so escapes
            # a narrowed affinity (taskset, a container's cpuset): size it to what we may use
            threads = usable
        if threads is not None:
            options.intra_op_num_threads = int(threads)
        # Idle intra-op threads sleep instead of spin-waiting: the renderer shares the CPU with
        # the compositor, the encoder and other sessions, and spinning threads starve them.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # ONNX Runtime's CPU memory arena stays on: without it RSS was higher, not lower (glibc
        # keeps the freed blocks per thread: 408-560 vs 290-373 MB in `bench capacity` at one
        # and two sessions) and the batch-1 render slower (15.6-17.5 vs 15.0-15.6 ms).
        self.session = ort.InferenceSession(str(self.path), options, providers=providers)
        self.device = device
        self.name = f"onnxruntime-{device}"
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """See ``Backend.run``. Raises ``ValueError`` for missing or unknown inputs."""
        _check_feeds(feeds, self.input_names)
        return list(self.session.run(self.output_names, feeds))


class _DeviceBuffer:
    """A cudaMalloc'd block that grows on demand (never shrinks)."""

    def __init__(self) -> None:
        self.ptr = 0
        self.nbytes = 0

    def ensure(self, nbytes: int) -> int:
        if nbytes > self.nbytes:
            self.free()
            cudart = import_cudart()
            self.ptr = int(cuda_check(cudart.cudaMalloc(max(nbytes, 1))))
            self.nbytes = nbytes
        return self.ptr

    def free(self) -> None:
        if self.ptr:
            cuda_check(import_cudart().cudaFree(self.ptr))
        self.ptr = 0
        self.nbytes = 0


class TensorRTBackend:
    """A deserialized TensorRT engine from the plan cache (``engines.tensorrt.build``).

    Args:
        path: the .onnx file the plan was built from (its bytes pick the plan).
        plan: a plan file to load instead of looking one up.

    Raises ``TensorRTUnavailable`` without tensorrt/cuda-python/GPU, ``FileNotFoundError`` when
    no plan exists for this ONNX hash on this GPU and TensorRT version (the message says to run
    ``facecast build-engines``), ``RuntimeError`` if the plan does not deserialize.

    Calls are serialised by a lock (one execution context); device buffers are reused and grow
    with the batch. ``close()`` frees them.
    """

    name = "tensorrt"

    def __init__(self, path: str | Path, plan: str | Path | None = None) -> None:
        self.path = Path(path)
        trt = import_tensorrt()
        cudart = import_cudart()
        if plan is None:
            if not self.path.is_file():
                raise FileNotFoundError(f"ONNX file not found: {self.path}")
            found = find_plan(self.path)
            if found is None:
                key = current_key(self.path)  # raises TensorRTUnavailable without a GPU
                raise FileNotFoundError(
                    f"no TensorRT engine for {self.path.name} on this GPU/TensorRT version "
                    f"(cache key {key}, TensorRT {trt.__version__}): {BUILD_HINT}")
            plan = found
        self.plan = Path(plan)
        self.meta = read_sidecar(self.plan)
        self._trt = trt
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(self.plan.read_bytes())
        if self.engine is None:
            raise RuntimeError(f"TensorRT could not deserialize {self.plan} (built by another "
                               f"version or GPU?): {BUILD_HINT}")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        is_input = {n: self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self.input_names = [n for n in names if is_input[n]]
        self.output_names = [n for n in names if not is_input[n]]
        self._dtypes = {n: np.dtype(trt.nptype(self.engine.get_tensor_dtype(n))) for n in names}
        self._buffers = {n: _DeviceBuffer() for n in names}
        self._stream = cuda_check(cudart.cudaStreamCreate())
        self._lock = threading.Lock()

    def profile_range(self, name: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(min shape, max shape) input ``name`` accepts (optimisation profile 0)."""
        lo, _, hi = self.engine.get_tensor_profile_shape(name, 0)
        return tuple(lo), tuple(hi)

    def _check_shape(self, name: str, shape: tuple[int, ...]) -> None:
        declared = tuple(self.engine.get_tensor_shape(name))
        if len(shape) != len(declared):
            raise ValueError(f"input {name!r}: rank {len(shape)}, engine expects {declared}")
        if any(d < 0 for d in declared):
            lo, hi = self.profile_range(name)
            if any(s < a or s > b for s, a, b in zip(shape, lo, hi)):
                raise ValueError(f"input {name!r} shape {shape} outside the engine's profile "
                                 f"{lo}..{hi}: rebuild with a larger range ({BUILD_HINT} "
                                 "--max-batch N)")
        elif shape != declared:
            raise ValueError(f"input {name!r} shape {shape}, engine expects {declared}")

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """See ``Backend.run``. Inputs are cast to the engine's dtypes. Raises ``ValueError``
        for missing/unknown inputs or shapes outside the engine's profile, ``RuntimeError`` for
        CUDA/TensorRT failures."""
        _check_feeds(feeds, self.input_names)
        cudart = import_cudart()
        h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        with self._lock:
            hosts = {}
            for name in self.input_names:
                arr = np.ascontiguousarray(feeds[name], dtype=self._dtypes[name])
                self._check_shape(name, tuple(arr.shape))
                if not self.context.set_input_shape(name, tuple(arr.shape)):
                    raise ValueError(f"TensorRT refused shape {arr.shape} for input {name!r}")
                ptr = self._buffers[name].ensure(arr.nbytes)
                cuda_check(cudart.cudaMemcpyAsync(ptr, arr.ctypes.data, arr.nbytes, h2d,
                                                  self._stream))
                self.context.set_tensor_address(name, ptr)
                hosts[name] = arr  # keep alive until the stream is synchronised
            outputs = []
            for name in self.output_names:
                shape = tuple(self.context.get_tensor_shape(name))
                if any(d < 0 for d in shape):
                    raise RuntimeError(f"TensorRT could not infer the shape of output {name!r}")
                out = np.empty(shape, dtype=self._dtypes[name])
                ptr = self._buffers[name].ensure(out.nbytes)
                self.context.set_tensor_address(name, ptr)
                outputs.append(out)
            if not self.context.execute_async_v3(int(self._stream)):
                raise RuntimeError(f"TensorRT execution failed for {self.plan.name}")
            for name, out in zip(self.output_names, outputs):
                cuda_check(cudart.cudaMemcpyAsync(out.ctypes.data, self._buffers[name].ptr,
                                                  out.nbytes, d2h, self._stream))
            cuda_check(cudart.cudaStreamSynchronize(self._stream))
            del hosts
        return outputs

    def close(self) -> None:
        """Free device buffers and the stream (the backend is unusable afterwards)."""
        with self._lock:
            for buf in self._buffers.values():
                buf.free()
            if self._stream is not None:
                cuda_check(import_cudart().cudaStreamDestroy(self._stream))
                self._stream = None

    def __del__(self) -> None:
        # Interpreter shutdown or a never-finished __init__: nothing left to free.
        with contextlib.suppress(Exception):
            self.close()


def tensorrt_ready(path: str | Path) -> bool:
    """Whether ``auto`` would pick TensorRT: tensorrt and cuda-python import, a GPU is present
    and a plan for this ONNX/GPU/TensorRT is cached."""
    try:
        import_tensorrt()
        import_cudart()
    except TensorRTUnavailable:
        return False
    return find_plan(path) is not None


def open_backend(path: str | Path, kind: BackendKind = "auto", threads: int | None = None
                 ) -> Backend:
    """Open ``path`` with the backend ``kind`` names; returns a ``Backend``.

    Args:
        path: the .onnx file.
        kind: "auto" (TensorRT if it imports and a plan is cached, else ONNX Runtime CUDA if
            available, else ONNX Runtime CPU), "onnxruntime" (CPU), "cuda" (ONNX Runtime CUDA)
            or "tensorrt".
        threads: ONNX Runtime intra-op threads.

    Raises ``ValueError`` for an unknown kind; otherwise as the backend's constructor
    (``TensorRTUnavailable`` says how to install TensorRT, a missing plan says
    ``run `facecast build-engines```).
    """
    if kind == "auto":
        if tensorrt_ready(path):
            return TensorRTBackend(path)
        if ort_cuda_available():
            return OrtBackend(path, "cuda", threads)
        return OrtBackend(path, "cpu", threads)
    if kind == "onnxruntime":
        return OrtBackend(path, "cpu", threads)
    if kind == "cuda":
        return OrtBackend(path, "cuda", threads)
    if kind == "tensorrt":
        return TensorRTBackend(path)
    raise ValueError(f"unknown backend kind {kind!r} (auto, onnxruntime, cuda, tensorrt)")
