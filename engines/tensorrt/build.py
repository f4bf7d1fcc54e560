"""Building and caching TensorRT engines (serialized plans) for our ONNX graphs.

A plan is only valid for the GPU model, the TensorRT version and the exact ONNX bytes it was
built from, so its file name carries ``engine_cache_key`` of all three (plus the compute
capability). Plans live in ``cache_dir()``: ``<onnx stem>-<key>.plan`` next to a JSON sidecar
``<onnx stem>-<key>.json`` with the key's fields and the optimisation profile.

Dynamic dimensions: dim 0 of every input is the batch (``min_batch``/``opt_batch``/
``max_batch``), and so is any other dimension named like a dim 0 (the motion model's GRU state
``h`` is [layers, batch, hidden]). Other dynamic dimensions need a (min, opt, max) range by name:
``dim_ranges`` argument > the model's ``facecast.trt_dim_ranges`` metadata (JSON) >
``DEFAULT_DIM_RANGES``.

TensorRT (``tensorrt``) and CUDA (``cuda-python``) are imported lazily: this module imports, and
``engine_cache_key``/``cache_dir`` work, on a machine without either. No torch.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

PLAN_FORMAT = 1
"""Bumped when the plan/sidecar layout changes, so old caches are not picked up."""
DEFAULT_WORKSPACE_BYTES = 2 << 30
"""Builder workspace memory-pool limit (2 GiB)."""
DEFAULT_DIM_RANGES: Mapping[str, tuple[int, int, int]] = MappingProxyType({
    # engines.motion: feats [B, T + 2, 80]; streaming calls carry 1-2 frames + 2 context
    # frames, offline clips up to ~40 s.
    "time": (3, 16, 4096),
})
"""(min, opt, max) for named dynamic dimensions other than the batch."""
INSTALL_HINT = ("TensorRT is not installed: pip install tensorrt cuda-python (or "
                "pip install 'facecast[tensorrt]') on a machine with an NVIDIA GPU")


class TensorRTUnavailable(RuntimeError):
    """``tensorrt`` or ``cuda-python`` cannot be imported, or there is no CUDA device."""


def import_tensorrt() -> Any:
    """The ``tensorrt`` module; raises ``TensorRTUnavailable`` (with ``INSTALL_HINT``)."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise TensorRTUnavailable(INSTALL_HINT) from exc
    return trt


def import_cudart() -> Any:
    """cuda-python's runtime module (``cuda.bindings.runtime``, or ``cuda.cudart`` before 12.6);
    raises ``TensorRTUnavailable``."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart  # type: ignore[no-redef]
        except ImportError as exc:
            raise TensorRTUnavailable(
                "cuda-python is not installed: pip install cuda-python") from exc
    return cudart


def cuda_check(result: Any) -> Any:
    """Unwrap a cuda-python call's ``(err, *values)`` tuple; raises ``RuntimeError`` on error.
    Returns None, the one value, or a tuple of values."""
    cudart = import_cudart()
    err, *values = result if isinstance(result, tuple) else (result,)
    if err != cudart.cudaError_t.cudaSuccess:
        _, text = cudart.cudaGetErrorString(err)
        raise RuntimeError(f"CUDA error {err}: {text.decode() if isinstance(text, bytes) else text}")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


@dataclass(frozen=True)
class GpuInfo:
    """The CUDA device plans are built for: ``name`` (e.g. "NVIDIA H100 80GB HBM3") and
    ``compute_capability`` ("9.0")."""

    name: str
    compute_capability: str


def gpu_info(device: int | None = None) -> GpuInfo:
    """Name and compute capability of a CUDA device (default: the current one), via cudart.
    Raises ``TensorRTUnavailable`` without cuda-python or a device."""
    cudart = import_cudart()
    try:
        dev = cuda_check(cudart.cudaGetDevice()) if device is None else device
        prop = cuda_check(cudart.cudaGetDeviceProperties(dev))
    except RuntimeError as exc:
        raise TensorRTUnavailable(f"no usable CUDA device: {exc}") from exc
    raw = prop.name
    name = raw.split(b"\0", 1)[0].decode() if isinstance(raw, bytes) else str(raw)
    return GpuInfo(name.strip(), f"{prop.major}.{prop.minor}")


def onnx_sha256(onnx_path: str | Path) -> str:
    """sha256 hex digest of the ONNX file's bytes."""
    digest = hashlib.sha256()
    with open(onnx_path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def engine_cache_key(onnx_path: str | Path, gpu_name: str, compute_capability: str,
                     trt_version: str) -> str:
    """The cache key of a plan: 32 hex characters of sha256 over the ONNX bytes' sha256, the GPU
    name, its compute capability, the TensorRT version and ``PLAN_FORMAT``. Any change to one
    of them gives another key. Raises ``FileNotFoundError`` for a missing ONNX file."""
    fields = {"onnx_sha256": onnx_sha256(onnx_path), "gpu_name": gpu_name,
              "compute_capability": str(compute_capability), "tensorrt": str(trt_version),
              "format": PLAN_FORMAT}
    blob = json.dumps(fields, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:32]


def cache_dir() -> Path:
    """Where plans live: ``$FACECAST_ENGINE_DIR`` or ``~/.cache/facecast/engines`` (not created
    here)."""
    env = os.environ.get("FACECAST_ENGINE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "facecast" / "engines"


def plan_path(onnx_path: str | Path, key: str) -> Path:
    """The plan file for ``onnx_path`` under ``key`` (its sidecar: same name, ``.json``)."""
    return cache_dir() / f"{Path(onnx_path).stem}-{key}.plan"


def current_key(onnx_path: str | Path) -> str:
    """``engine_cache_key`` for this machine's GPU and installed TensorRT; raises
    ``TensorRTUnavailable`` when either is missing."""
    trt = import_tensorrt()
    gpu = gpu_info()
    return engine_cache_key(onnx_path, gpu.name, gpu.compute_capability, trt.__version__)


def find_plan(onnx_path: str | Path) -> Path | None:
    """The cached plan for ``onnx_path`` on this GPU and TensorRT version, or None (also None
    when TensorRT, cuda-python or a GPU is missing, or the ONNX file does not exist)."""
    if not Path(onnx_path).is_file():
        return None
    try:
        key = current_key(onnx_path)
    except TensorRTUnavailable:
        return None
    path = plan_path(onnx_path, key)
    return path if path.is_file() else None


def read_sidecar(plan: str | Path) -> dict[str, Any]:
    """The JSON sidecar of a plan ({} if missing or unreadable)."""
    try:
        return json.loads(Path(plan).with_suffix(".json").read_text())
    except (OSError, ValueError):
        return {}


def _model_dim_ranges(onnx_path: Path) -> dict[str, tuple[int, int, int]]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    raw = meta.get("facecast.trt_dim_ranges")
    if not raw:
        return {}
    return {str(k): (int(v[0]), int(v[1]), int(v[2])) for k, v in json.loads(raw).items()}


def input_profiles(onnx_path: str | Path, min_batch: int, opt_batch: int, max_batch: int,
                   dim_ranges: Mapping[str, tuple[int, int, int]] | None = None
                   ) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
    """min/opt/max shapes for every input with a dynamic dimension (static inputs omitted).

    Shapes come from the ONNX inputs (read with onnxruntime, no onnx package needed). Raises
    ``ValueError`` for a bad batch range or a dynamic dimension with no known range.
    """
    import onnxruntime as ort

    if not 1 <= min_batch <= opt_batch <= max_batch:
        raise ValueError(f"need 1 <= min_batch <= opt_batch <= max_batch, got "
                         f"{min_batch}, {opt_batch}, {max_batch}")
    path = Path(onnx_path)
    ranges = {**DEFAULT_DIM_RANGES, **_model_dim_ranges(path), **(dim_ranges or {})}
    inputs = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_inputs()
    batch_names = {i.shape[0] for i in inputs if i.shape and isinstance(i.shape[0], str)}
    profiles = {}
    for inp in inputs:
        shape = list(inp.shape)
        if all(isinstance(d, int) and d > 0 for d in shape):
            continue
        lo, mid, hi = [], [], []
        for axis, dim in enumerate(shape):
            if isinstance(dim, int) and dim > 0:
                rng = (dim, dim, dim)
            elif axis == 0 or dim in batch_names:
                rng = (min_batch, opt_batch, max_batch)
            elif isinstance(dim, str) and dim in ranges:
                rng = ranges[dim]
            else:
                raise ValueError(
                    f"{path.name}: input {inp.name!r} axis {axis} ({dim!r}) is dynamic and has no "
                    "range: pass dim_ranges={name: (min, opt, max)} or set the model metadata "
                    "facecast.trt_dim_ranges")
            lo.append(rng[0])
            mid.append(rng[1])
            hi.append(rng[2])
        profiles[inp.name] = (tuple(lo), tuple(mid), tuple(hi))
    return profiles


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _parser_errors(parser: Any) -> list[str]:
    out = []
    for i in range(parser.num_errors):
        err = parser.get_error(i)
        try:
            where = f"node {err.node()} ({err.node_name()}, {err.node_operator()}): "
        except AttributeError:  # older 10.x bindings expose fewer accessors
            where = f"node {err.node()}: "
        out.append(f"{where}{err.desc()}")
    return out


def build_engine(onnx_path: str | Path, min_batch: int = 1, opt_batch: int = 8,
                 max_batch: int = 64, fp16: bool = True, *,
                 dim_ranges: Mapping[str, tuple[int, int, int]] | None = None,
                 workspace_bytes: int = DEFAULT_WORKSPACE_BYTES, check: bool = True) -> Path:
    """Build a TensorRT plan for ``onnx_path`` on this GPU and cache it (see module doc).

    Args:
        onnx_path: the .onnx file.
        min_batch, opt_batch, max_batch: the optimisation profile's batch range.
        fp16: allow FP16 kernels (I/O stays as the ONNX declares, float32 for ours).
        dim_ranges: (min, opt, max) for named non-batch dynamic dimensions.
        workspace_bytes: builder workspace memory-pool limit.
        check: first run ``engines.tensorrt.support.assert_supported`` (skipped if the ``onnx``
            package is missing).

    Returns:
        The plan's path (written atomically; the JSON sidecar first, so a plan file present
        means a complete build).

    Raises ``TensorRTUnavailable`` without TensorRT/cuda-python/GPU, ``FileNotFoundError`` for a
    missing file, ``ValueError`` for unsupported graphs or bad ranges (with the ONNX parser's
    errors), ``RuntimeError`` when the build fails.
    """
    path = Path(onnx_path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX file not found: {path}")
    trt = import_tensorrt()
    gpu = gpu_info()
    if check:
        try:
            from engines.tensorrt.support import assert_supported
        except ImportError:
            assert_supported = None  # type: ignore[assignment]
        if assert_supported is not None:
            assert_supported(path)
    profiles = input_profiles(path, min_batch, opt_batch, max_batch, dim_ranges)

    started = time.perf_counter()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    explicit = getattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH", None)
    if explicit is not None:  # the default (and the flag deprecated) from TensorRT 10
        flags |= 1 << int(explicit)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(path)):
        errors = "\n".join(f"  - {e}" for e in _parser_errors(parser)) or "  (no details)"
        raise ValueError(f"TensorRT's ONNX parser rejected {path}:\n{errors}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_bytes))
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    network_inputs = {network.get_input(i).name: network.get_input(i)
                      for i in range(network.num_inputs)}
    if profiles:
        profile = builder.create_optimization_profile()
        for name, (lo, mid, hi) in profiles.items():
            if name not in network_inputs:
                raise ValueError(f"{path.name}: input {name!r} missing from the parsed network")
            if len(network_inputs[name].shape) != len(lo):
                raise ValueError(f"{path.name}: input {name!r} has rank "
                                 f"{len(network_inputs[name].shape)} in TensorRT, {len(lo)} in ONNX")
            profile.set_shape(name, lo, mid, hi)
        config.add_optimization_profile(profile)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine for {path} (see its log above)")
    plan_bytes = bytes(serialized)

    key = engine_cache_key(path, gpu.name, gpu.compute_capability, trt.__version__)
    plan = plan_path(path, key)
    sidecar = {
        "key": key, "format": PLAN_FORMAT, "onnx": path.name, "onnx_sha256": onnx_sha256(path),
        "gpu_name": gpu.name, "compute_capability": gpu.compute_capability,
        "tensorrt": trt.__version__, "fp16": bool(fp16),
        "profiles": {n: {"min": list(lo), "opt": list(mid), "max": list(hi)}
                     for n, (lo, mid, hi) in profiles.items()},
        "build_seconds": round(time.perf_counter() - started, 3), "plan_bytes": len(plan_bytes),
    }
    _atomic_write(plan.with_suffix(".json"), (json.dumps(sidecar, indent=1) + "\n").encode())
    _atomic_write(plan, plan_bytes)
    return plan


def build_engines_main(paths: list[Path], max_batch: int) -> int:
    """``facecast build-engines``: build (or rebuild) a plan for each ONNX file, printing one
    JSON line per engine to stdout. Returns 0 on success, 1 when TensorRT is missing or any
    build failed (errors go to stderr as one line each)."""
    try:
        import_tensorrt()
        gpu_info()
    except TensorRTUnavailable as exc:
        print(str(exc), file=sys.stderr)
        return 1
    status = 0
    for onnx_path in paths:
        try:
            plan = build_engine(onnx_path, min_batch=1, opt_batch=min(8, max_batch),
                                max_batch=max_batch)
        except (OSError, ValueError, RuntimeError) as exc:
            message = str(exc).replace("\n", " ")
            print(f"build-engines: {onnx_path}: {message}", file=sys.stderr)
            status = 1
            continue
        meta = read_sidecar(plan)
        print(json.dumps({"onnx": str(onnx_path), "plan": str(plan), "key": meta.get("key"),
                          "gpu": meta.get("gpu_name"),
                          "compute_capability": meta.get("compute_capability"),
                          "tensorrt": meta.get("tensorrt"), "fp16": meta.get("fp16"),
                          "max_batch": max_batch, "build_seconds": meta.get("build_seconds"),
                          "plan_bytes": meta.get("plan_bytes")}), flush=True)
    return status
