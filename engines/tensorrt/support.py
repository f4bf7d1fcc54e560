"""Will TensorRT's ONNX parser take this graph? A static check against TensorRT 10.x's documented
ONNX operator support, run before an engine is built (and by the tests on every committed ONNX).

The table ``TRT_OPS`` transcribes the onnx-tensorrt support matrix for TensorRT 10.x
(https://github.com/onnx/onnx-tensorrt/blob/main/docs/operators.md, the TensorRT 10.15 edition:
opsets 9–24; TensorRT 10.0 parses opsets 9–20). Per operator: whether it is supported, the
tensor types it takes, and the documented restriction. Where the matrix names a restriction,
``check_onnx`` tests it; a few more come from the parser's importers (onnx-tensorrt
``onnxOpImporters.cpp``) and the layer API (``NvInfer.h``), each marked where it is checked:

- GridSample: input (and grid) rank 4 only, i.e. 2-D sampling; 5-D (volumetric) GridSample is
  rejected. ``mode`` maps to ``IGridSampleLayer``'s interpolation NEAREST / LINEAR / CUBIC, named
  ``nearest``/``bilinear``/``bicubic`` in GridSample-16 and ``nearest``/``linear``/``cubic`` from
  GridSample-20 on; ``padding_mode`` zeros / border / reflection maps to the only sample modes the
  layer accepts (FILL, CLAMP, REFLECT); ``align_corners`` 0 or 1.
- Resize: ``mode`` nearest or linear; ``coordinate_transformation_mode`` half_pixel,
  pytorch_half_pixel, tf_half_pixel_for_nn, asymmetric or align_corners (not
  half_pixel_symmetric, not tf_crop_and_resize); ``nearest_mode`` floor, ceil,
  round_prefer_floor or round_prefer_ceil; ``keep_aspect_ratio_policy`` stretch; no antialias.
- Pad: ``mode`` constant, reflect, edge or wrap (importer).
- Pooling: 2-D or 3-D only, dilations all ones, MaxPool without the ``Indices`` output.
- GRU / RNN / LSTM: bidirectional ones use the same activations both ways; LSTM
  ``input_forget`` = 0 and ``layout`` = 0; the GRU/RNN importers read X as [seq, batch, feature]
  and ignore ``layout``, so ``layout`` = 1 is reported too.
- Reduce*: ``axes`` given as an input must be an initializer; Squeeze/Unsqueeze ``axes`` must be
  constant.

Every node is walked, subgraphs (If/Loop/Scan bodies) and model-local functions included.
Ops outside the default ONNX domain (custom ops) need a TensorRT plugin: the project allows
none, so they are reported. Our own rule on top of TensorRT's: opset ≥ 17 (``MIN_OPSET``).

Needs the ``onnx`` package (training/export extra), not torch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import onnx
from onnx import (
    AttributeProto,
    GraphProto,
    ModelProto,
    NodeProto,
    TensorProto,
    helper,
    numpy_helper,
)

MIN_OPSET = 17
"""The lowest default-domain opset our graphs may use (project rule: GridSample, LayerNorm and
the opset-17 exporters; older graphs are re-exported, not patched)."""
MAX_OPSET = 20
"""The highest opset every TensorRT 10.x parser takes (10.0: opsets 9–20; later 10.x more)."""

_DEFAULT_DOMAINS = ("", "ai.onnx")


@dataclass(frozen=True)
class OpSupport:
    """TensorRT's documented support for one ONNX operator.

    Attributes:
        supported: the matrix says Y.
        types: tensor types it takes (``FP32``, ``FP16``, ``BF16``, ``INT32``, ``INT64``,
            ``BOOL``, ``UINT8``, ``INT8``, ``FP8``, ``INT4``, ``FP4``).
        restrictions: the documented restriction, paraphrased ("" for none).
    """

    supported: bool
    types: frozenset[str]
    restrictions: str = ""


@dataclass(frozen=True)
class Problem:
    """One reason TensorRT would not build (or would mis-build) a graph.

    Attributes:
        node_name: the node's name (``<model>`` for model-level problems; a subgraph node is
            prefixed with its parent's name and the graph attribute, ``loop/body/node``).
        op_type: the operator ("" for model-level problems).
        reason: what is wrong, in words.
    """

    node_name: str
    op_type: str
    reason: str

    def __str__(self) -> str:
        where = f"{self.node_name} ({self.op_type})" if self.op_type else self.node_name
        return f"{where}: {self.reason}"


# Operator | supported types ("-" = not supported) | restriction. TensorRT 10.15 support matrix.
_MATRIX = """
Abs|FP32 FP16 BF16 INT32 INT64|
Acos|FP32 FP16 BF16|
Acosh|FP32 FP16 BF16|
Add|FP32 FP16 BF16 INT32 INT64|
AffineGrid|-|
And|BOOL|
ArgMax|FP32 FP16 BF16 INT32 INT64|
ArgMin|FP32 FP16 BF16 INT32 INT64|
Asin|FP32 FP16 BF16|
Asinh|FP32 FP16 BF16|
Atan|FP32 FP16 BF16|
Atanh|FP32 FP16 BF16|
Attention|FP32 FP16 BF16 INT8 FP8|Q, K, V and attn_mask 4-D; no KV-cache inputs/outputs, no softcap
AveragePool|FP32 FP16 BF16|2-D or 3-D pooling only; dilations empty or all ones
BatchNormalization|FP32 FP16 BF16|
Bernoulli|-|
BitShift|-|
BitwiseAnd|-|
BitwiseNot|-|
BitwiseOr|-|
BitwiseXor|-|
BlackmanWindow|FP32 FP16|
Cast|FP32 FP16 BF16 INT32 INT64 UINT8 BOOL|
CastLike|FP32 FP16 BF16 INT32 INT64 UINT8 BOOL|
Ceil|FP32 FP16 BF16|
Celu|FP32 FP16 BF16|
CenterCropPad|-|
Clip|FP32 FP16 BF16|
Col2Im|-|
Compress|-|
Concat|FP32 FP16 BF16 INT32 INT64 BOOL|
ConcatFromSequence|-|
Constant|FP32 FP16 BF16 FP8 FP4 INT4 INT32 INT64 BOOL|sparse_value, value_string, value_strings unsupported
ConstantOfShape|FP32 FP16 BF16 FP8 FP4 INT4 INT32 INT64 BOOL|
Conv|FP32 FP16 BF16|
ConvInteger|-|
ConvTranspose|FP32 FP16 BF16|
Cos|FP32 FP16 BF16|
Cosh|FP32 FP16 BF16|
CumSum|FP32 FP16 BF16|axis must be a build-time constant
DFT|-|
DeformConv|FP32 FP16|1-D or 2-D spatial input; symmetric pads
DepthToSpace|FP32 FP16 BF16 INT32 INT64|
DequantizeLinear|INT8 FP8 FP4 INT4|x_zero_point must be zero
Det|-|
Div|FP32 FP16 BF16 INT32 INT64|
Dropout|FP32 FP16 BF16|is_training must be an initializer and False
DynamicQuantizeLinear|-|
Einsum|FP32 FP16 BF16|
Elu|FP32 FP16 BF16|
Equal|FP32 FP16 BF16 INT32 INT64|
Erf|FP32 FP16 BF16|
Exp|FP32 FP16 BF16|
Expand|FP32 FP16 BF16 INT32 INT64 BOOL|
EyeLike|FP32 FP16 BF16 INT32 INT64 BOOL|input must have static dimensions
Flatten|FP32 FP16 BF16 INT32 INT64 BOOL|
Floor|FP32 FP16 BF16|
Gather|FP32 FP16 BF16 INT32 INT64 BOOL|
GatherElements|FP32 FP16 BF16 INT32 INT64 BOOL|
GatherND|FP32 FP16 BF16 INT32 INT64 BOOL|
Gelu|FP32 FP16 BF16 INT8 INT32 INT64|
Gemm|FP32 FP16 BF16|
GlobalAveragePool|FP32 FP16 BF16|
GlobalLpPool|FP32 FP16 BF16|
GlobalMaxPool|FP32 FP16 BF16|
Greater|FP32 FP16 BF16 INT32 INT64|
GreaterOrEqual|FP32 FP16 BF16 INT32 INT64|
GridSample|FP32 FP16|input must be 4-D (2-D sampling only)
GroupNormalization|FP32 FP16 BF16|
GRU|FP32 FP16 BF16|bidirectional: same activations forward and reverse
HammingWindow|FP32 FP16|
HannWindow|FP32 FP16|
HardSigmoid|FP32 FP16 BF16|
HardSwish|FP32 FP16 BF16|
Hardmax|FP32 FP16 BF16|axis dimension must be a build-time constant
Identity|FP32 FP16 BF16 INT32 INT64 BOOL|
If|FP32 FP16 BF16 INT32 INT64 BOOL|branch outputs: same rank, different names
ImageScaler|FP32 FP16 BF16|
ImageDecoder|-|
InstanceNormalization|FP32 FP16 BF16|
IsInf|FP32 FP16 BF16|
IsNaN|FP32 FP16 BF16 INT32 INT64|
LayerNormalization|FP32 FP16 BF16|only the first output Y
LeakyRelu|FP32 FP16 BF16|
Less|FP32 FP16 BF16 INT32 INT64|
LessOrEqual|FP32 FP16 BF16 INT32 INT64|
Log|FP32 FP16 BF16|
LogSoftmax|FP32 FP16 BF16|
Loop|FP32 FP16 BF16 INT32 INT64 BOOL|scan output length static; carried shapes constant across iterations
LRN|FP32 FP16 BF16|
LSTM|FP32 FP16 BF16|bidirectional: same activations both ways; input_forget = 0; layout = 0
LpNormalization|FP32 FP16 BF16|
LpPool|FP32 FP16 BF16|dilations empty or all ones
MatMul|FP32 FP16 BF16|
MatMulInteger|-|
Max|FP32 FP16 BF16 INT32 INT64|
MaxPool|FP32 FP16 BF16|2-D or 3-D pooling only; no Indices output; dilations empty or all ones
MaxRoiPool|-|
MaxUnpool|-|
Mean|FP32 FP16 BF16 FP8 INT32 INT64|
MeanVarianceNormalization|FP32 FP16 BF16|
MelWeightMatrix|-|
Min|FP32 FP16 BF16 INT32 INT64|
Mish|FP32 FP16|
Mod|FP32 FP16 BF16 INT32 INT64|
Mul|FP32 FP16 BF16 INT32 INT64|
Multinomial|-|
Neg|FP32 FP16 BF16 INT32 INT64|
NegativeLogLikelihoodLoss|-|
NonMaxSuppression|FP32 FP16|
NonZero|FP32 FP16|
Not|BOOL|
OneHot|FP32 FP16 BF16 INT32 INT64 BOOL|depth must be a build-time constant
Optional|-|
OptionalGetElement|-|
OptionalHasElement|-|
Or|BOOL|
Pad|FP32 FP16 BF16 INT32 INT64|
ParametricSoftplus|FP32 FP16 BF16|
Pow|FP32 FP16 BF16 INT32 INT64|
PRelu|FP32 FP16 BF16|
QLinearConv|-|
QLinearMatMul|-|
QuantizeLinear|FP32 FP16 BF16|y_zero_point must be 0
RandomNormal|FP32 FP16 BF16|seed ignored
RandomNormalLike|FP32 FP16 BF16|seed ignored
RandomUniform|FP32 FP16 BF16|seed ignored
RandomUniformLike|FP32 FP16 BF16|seed ignored
Range|FP32 FP16 BF16 INT32 INT64|
Reciprocal|FP32 FP16 BF16|
ReduceL1|FP32 FP16 BF16 INT32 INT64|axes must be an initializer
ReduceL2|FP32 FP16 BF16 INT32 INT64|axes must be an initializer
ReduceLogSum|FP32 FP16 BF16 INT32 INT64|axes must be an initializer
ReduceLogSumExp|FP32 FP16 BF16 INT32 INT64|axes must be an initializer
ReduceMax|FP32 FP16 BF16 INT32 INT64|axes must be an initializer
ReduceMean|FP32 FP16 BF16 INT32 INT64|axes must be an initializer
ReduceMin|FP32 FP16 BF16 INT32 INT64|axes must be an initializer
ReduceProd|FP32 FP16 BF16 INT32 INT64|axes must be an initializer
ReduceSum|FP32 FP16 BF16 INT32 INT64|axes must be an initializer
ReduceSumSquare|FP32 FP16 BF16 INT32 INT64|axes must be an initializer
RegexFullMatch|-|
Relu|FP32 FP16 BF16 INT32 INT64|
Reshape|FP32 FP16 BF16 INT32 INT64 BOOL|
Resize|FP32 FP16 BF16|modes nearest/linear; coordinate modes half_pixel, pytorch_half_pixel, tf_half_pixel_for_nn, asymmetric, align_corners; nearest modes floor, ceil, round_prefer_floor, round_prefer_ceil; aspect policy stretch; axes with tensor scales must be iota; no antialiasing
ReverseSequence|FP32 FP16 BF16 INT32 INT64 BOOL|
RMSNormalization|FP32 FP16 BF16|
RNN|FP32 FP16 BF16|bidirectional: same activations forward and reverse
RoiAlign|FP32 FP16|
RotaryEmbedding|FP32 FP16 BF16|position_ids must be INT64
Round|FP32 FP16 BF16|
STFT|FP32|frame_step and window must be initializers; real input
ScaledTanh|FP32 FP16 BF16|
Scan|FP32 FP16 BF16|
Scatter|FP32 FP16 BF16 INT32 INT64|
ScatterElements|FP32 FP16 BF16 INT32 INT64|
ScatterND|FP32 FP16 BF16 INT32 INT64|reduction must be none
Selu|FP32 FP16 BF16|
SequenceAt|-|
SequenceConstruct|-|
SequenceEmpty|-|
SequenceErase|-|
SequenceInsert|-|
SequenceLength|-|
SequenceMap|-|
Shape|FP32 FP16 BF16 INT32 INT64 BOOL|
Shrink|FP32 FP16 BF16 INT32 INT64|
Sigmoid|FP32 FP16 BF16|
Sign|FP32 FP16 BF16 INT32 INT64|
Sin|FP32 FP16 BF16|
Sinh|FP32 FP16 BF16|
Size|FP32 FP16 BF16 INT32 INT64 BOOL|
Slice|FP32 FP16 BF16 INT32 INT64 BOOL|
Softmax|FP32 FP16 BF16|
SoftmaxCrossEntropyLoss|-|
Softplus|FP32 FP16 BF16|
Softsign|FP32 FP16 BF16|
SpaceToDepth|FP32 FP16 BF16 INT32 INT64|
Split|FP32 FP16 BF16 INT32 INT64 BOOL|
SplitToSequence|-|
Sqrt|FP32 FP16 BF16|
Squeeze|FP32 FP16 BF16 INT32 INT64 BOOL|axes must resolve to a constant
StringConcat|-|
StringNormalizer|-|
StringSplit|-|
Sub|FP32 FP16 BF16 INT32 INT64|
Sum|FP32 FP16 BF16 INT32 INT64|
Tan|FP32 FP16 BF16|
Tanh|FP32 FP16 BF16|
TensorScatter|FP32 FP16 BF16 INT32|past_cache and update 4-D; axis -2
TfIdfVectorizer|-|
ThresholdedRelu|FP32 FP16 BF16|
Tile|FP32 FP16 BF16 INT32 INT64 BOOL|
TopK|FP32 FP16 BF16 INT32 INT64|sorted must be 1; K < 3840
Transpose|FP32 FP16 BF16 INT32 INT64 BOOL|
Trilu|FP32 FP16 BF16 INT32 INT64 BOOL|
Unique|-|
Unsqueeze|FP32 FP16 BF16 INT32 INT64 BOOL|axes must resolve to a constant
Upsample|FP32 FP16 BF16|
Where|FP32 FP16 BF16 INT32 INT64 BOOL|
Xor|BOOL|
"""


def _parse_matrix(text: str) -> Mapping[str, OpSupport]:
    table: dict[str, OpSupport] = {}
    for line in text.strip().splitlines():
        op, types, restriction = line.split("|", 2)
        supported = types.strip() != "-"
        table[op] = OpSupport(supported, frozenset(types.split()) if supported else frozenset(),
                              restriction.strip())
    return MappingProxyType(table)


TRT_OPS: Mapping[str, OpSupport] = _parse_matrix(_MATRIX)
"""ONNX op type → TensorRT 10.x support (read-only)."""

_ONNX_TYPE_NAMES: Mapping[int, str] = MappingProxyType({
    TensorProto.FLOAT: "FP32",
    TensorProto.DOUBLE: "FP32",  # "limited support": the parser casts DOUBLE down to FLOAT
    TensorProto.FLOAT16: "FP16",
    TensorProto.BFLOAT16: "BF16",
    TensorProto.INT32: "INT32",
    TensorProto.INT64: "INT64",
    TensorProto.BOOL: "BOOL",
    TensorProto.UINT8: "UINT8",
    TensorProto.INT8: "INT8",
    TensorProto.FLOAT8E4M3FN: "FP8",
    TensorProto.INT4: "INT4",
    TensorProto.FLOAT4E2M1: "FP4",
})
"""ONNX element types TensorRT has at all; anything else (INT16, UINT32, STRING, …) is not."""

GRIDSAMPLE_MODES_16 = frozenset({"bilinear", "nearest", "bicubic"})
"""GridSample-16 ``mode`` names (opsets 16–19) → TensorRT LINEAR / NEAREST / CUBIC."""
GRIDSAMPLE_MODES_20 = frozenset({"linear", "nearest", "cubic"})
"""GridSample-20+ ``mode`` names → TensorRT LINEAR / NEAREST / CUBIC."""
GRIDSAMPLE_PADDING = frozenset({"zeros", "border", "reflection"})
"""→ ``SampleMode`` FILL / CLAMP / REFLECT, the only ones ``IGridSampleLayer`` accepts."""
RESIZE_MODES = frozenset({"nearest", "linear"})
RESIZE_COORDINATE_MODES = frozenset({"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn",
                                     "asymmetric", "align_corners"})
RESIZE_NEAREST_MODES = frozenset({"floor", "ceil", "round_prefer_floor", "round_prefer_ceil"})
PAD_MODES = frozenset({"constant", "reflect", "edge", "wrap"})
_REDUCE_OPS = frozenset(op for op in TRT_OPS if op.startswith("Reduce"))


@dataclass
class _Graph:
    """What the checks of one graph's nodes need: ranks/types of values, constants, opset."""

    ranks: dict[str, int]
    types: dict[str, int]
    constants: dict[str, TensorProto]
    opset: int


def _attr(node: NodeProto, name: str, default: object = None) -> object:
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _text(value: object) -> object:
    return value.decode() if isinstance(value, bytes) else value


def _input(node: NodeProto, i: int) -> str:
    return node.input[i] if len(node.input) > i else ""


def _collect_value_infos(graph: GraphProto, g: _Graph) -> None:
    for vi in [*graph.input, *graph.value_info, *graph.output]:
        t = vi.type.tensor_type
        if vi.type.HasField("tensor_type"):
            if t.elem_type:
                g.types[vi.name] = t.elem_type
            if t.HasField("shape"):
                g.ranks[vi.name] = len(t.shape.dim)
    for init in graph.initializer:
        g.types[init.name] = init.data_type
        g.ranks[init.name] = len(init.dims)
        g.constants[init.name] = init
    for node in graph.node:
        if node.op_type == "Constant" and node.domain in _DEFAULT_DOMAINS and node.output:
            value = _attr(node, "value")
            if isinstance(value, TensorProto):
                g.constants[node.output[0]] = value
                g.types[node.output[0]] = value.data_type
                g.ranks[node.output[0]] = len(value.dims)


# --- per-operator checks: (node, graph facts) → reasons ------------------------------------

def _check_gridsample(node: NodeProto, g: _Graph) -> list[str]:
    out = []
    for i, what in ((0, "input X"), (1, "grid")):
        rank = g.ranks.get(_input(node, i))
        if rank is None:
            out.append(f"rank of {what} unknown after shape inference; TensorRT needs 4-D")
        elif rank != 4:
            out.append(f"{what} is {rank}-D; TensorRT GridSample takes 4-D only (2-D sampling, "
                       "no 5-D volumetric GridSample)")
    names = GRIDSAMPLE_MODES_20 if g.opset >= 20 else GRIDSAMPLE_MODES_16
    mode = _text(_attr(node, "mode", "linear" if g.opset >= 20 else "bilinear"))
    if mode not in names:
        out.append(f"mode {mode!r} not accepted at opset {g.opset} (valid: {sorted(names)}; "
                   "opset 16-19 say bilinear/nearest/bicubic, opset 20+ linear/nearest/cubic)")
    padding = _text(_attr(node, "padding_mode", "zeros"))
    if padding not in GRIDSAMPLE_PADDING:
        out.append(f"padding_mode {padding!r} not supported (valid: {sorted(GRIDSAMPLE_PADDING)})")
    align = _attr(node, "align_corners", 0)
    if align not in (0, 1):
        out.append(f"align_corners must be 0 or 1, got {align!r}")
    return out


def _check_resize(node: NodeProto, g: _Graph) -> list[str]:
    out = []
    mode = _text(_attr(node, "mode", "nearest"))
    if mode not in RESIZE_MODES:
        out.append(f"mode {mode!r} not supported (documented: {sorted(RESIZE_MODES)})")
    coord = _text(_attr(node, "coordinate_transformation_mode", "half_pixel"))
    if coord not in RESIZE_COORDINATE_MODES:
        out.append(f"coordinate_transformation_mode {coord!r} not supported "
                   f"(valid: {sorted(RESIZE_COORDINATE_MODES)})")
    nearest = _text(_attr(node, "nearest_mode", "round_prefer_floor"))
    if mode == "nearest" and nearest not in RESIZE_NEAREST_MODES:
        out.append(f"nearest_mode {nearest!r} not supported "
                   f"(valid: {sorted(RESIZE_NEAREST_MODES)})")
    policy = _text(_attr(node, "keep_aspect_ratio_policy", "stretch"))
    if policy != "stretch":
        out.append(f"keep_aspect_ratio_policy {policy!r} not supported (only 'stretch')")
    if _attr(node, "antialias", 0):
        out.append("antialias is not supported")
    axes = _attr(node, "axes")
    rank = g.ranks.get(_input(node, 0))
    scales = _input(node, 2)
    non_iota = axes is not None and (rank is None or list(axes) != list(range(rank)))
    if non_iota and scales and scales not in g.constants:
        out.append("axes other than 0..rank-1 need constant scales")
    return out


def _check_pad(node: NodeProto, g: _Graph) -> list[str]:
    mode = _text(_attr(node, "mode", "constant"))
    return [] if mode in PAD_MODES else [f"mode {mode!r} not supported (valid: {sorted(PAD_MODES)})"]


def _check_pool(node: NodeProto, g: _Graph) -> list[str]:
    out = []
    rank = g.ranks.get(_input(node, 0))
    if rank is None:
        out.append("input rank unknown after shape inference; TensorRT pools 2-D or 3-D only")
    elif rank not in (4, 5):
        out.append(f"input is {rank}-D; TensorRT pools 2-D or 3-D only (4-D or 5-D input)")
    dilations = _attr(node, "dilations")
    if dilations and any(d != 1 for d in dilations):
        out.append(f"dilations {list(dilations)} not supported (empty or all ones)")
    if node.op_type == "MaxPool" and len(node.output) > 1 and node.output[1]:
        out.append("the Indices output is not supported")
    return out


def _check_lppool(node: NodeProto, g: _Graph) -> list[str]:
    dilations = _attr(node, "dilations")
    if dilations and any(d != 1 for d in dilations):
        return [f"dilations {list(dilations)} not supported (empty or all ones)"]
    return []


def _check_recurrent(node: NodeProto, g: _Graph) -> list[str]:
    out = []
    if _text(_attr(node, "direction", "forward")) == "bidirectional":
        acts = [_text(a) for a in (_attr(node, "activations") or [])]
        half = len(acts) // 2
        if acts and acts[:half] != acts[half:]:
            out.append(f"bidirectional with different forward/reverse activations {acts}")
    if _attr(node, "layout", 0) != 0:
        out.append("layout = 1 (batch-first) is not supported; export with layout = 0")
    if node.op_type == "LSTM" and _attr(node, "input_forget", 0) != 0:
        out.append("input_forget must be 0")
    return out


def _check_reduce(node: NodeProto, g: _Graph) -> list[str]:
    axes = _input(node, 1)
    if axes and axes not in g.constants:
        return ["axes input must be an initializer (a constant), not a computed tensor"]
    return []


def _check_squeeze(node: NodeProto, g: _Graph) -> list[str]:
    axes = _input(node, 1)
    if axes and axes not in g.constants:
        return ["axes input must resolve to a constant"]
    return []


def _check_constant(node: NodeProto, g: _Graph) -> list[str]:
    bad = [a.name for a in node.attribute
           if a.name in ("sparse_value", "value_string", "value_strings")]
    return [f"attribute {b} is not supported" for b in bad]


def _check_dropout(node: NodeProto, g: _Graph) -> list[str]:
    training = _input(node, 2)
    if not training:
        return []
    tensor = g.constants.get(training)
    if tensor is None:
        return ["training_mode must be an initializer"]
    if numpy_helper.to_array(tensor).any():
        return ["training_mode must be False"]
    return []


def _check_topk(node: NodeProto, g: _Graph) -> list[str]:
    out = []
    if _attr(node, "sorted", 1) != 1:
        out.append("sorted must be 1")
    k = g.constants.get(_input(node, 1))
    if k is not None and int(numpy_helper.to_array(k).reshape(-1)[0]) >= 3840:
        out.append("K must be less than 3840")
    return out


def _check_scatternd(node: NodeProto, g: _Graph) -> list[str]:
    reduction = _text(_attr(node, "reduction", "none"))
    return [] if reduction == "none" else [f"reduction {reduction!r} not supported (only none)"]


def _check_cast(node: NodeProto, g: _Graph) -> list[str]:
    to = _attr(node, "to")
    name = _ONNX_TYPE_NAMES.get(int(to)) if to is not None else None  # type: ignore[call-overload]
    if to is not None and (name is None or name not in TRT_OPS[node.op_type].types):
        return [f"cast to {TensorProto.DataType.Name(int(to))} is not supported"]  # type: ignore[call-overload]
    return []


def _check_layernorm(node: NodeProto, g: _Graph) -> list[str]:
    if any(node.output[1:]):
        return ["only the first output Y is supported"]
    return []


_CHECKS: Mapping[str, Callable[[NodeProto, _Graph], list[str]]] = MappingProxyType({
    "GridSample": _check_gridsample,
    "Resize": _check_resize,
    "Pad": _check_pad,
    "AveragePool": _check_pool,
    "MaxPool": _check_pool,
    "LpPool": _check_lppool,
    "GRU": _check_recurrent,
    "RNN": _check_recurrent,
    "LSTM": _check_recurrent,
    "Squeeze": _check_squeeze,
    "Unsqueeze": _check_squeeze,
    "Constant": _check_constant,
    "Dropout": _check_dropout,
    "TopK": _check_topk,
    "ScatterND": _check_scatternd,
    "Cast": _check_cast,
    "LayerNormalization": _check_layernorm,
    **{op: _check_reduce for op in _REDUCE_OPS},
})

_TYPE_FREE_INPUT = frozenset({"Shape", "Size", "Constant", "ConstantOfShape"})
"""Ops whose first input's element type does not matter to TensorRT (only its shape does)."""


def _check_dtype(node: NodeProto, g: _Graph, support: OpSupport) -> list[str]:
    if node.op_type in _TYPE_FREE_INPUT or not _input(node, 0):
        return []
    elem = g.types.get(node.input[0])
    if elem is None or elem == TensorProto.UNDEFINED:
        return []
    name = _ONNX_TYPE_NAMES.get(elem)
    if name is None or name not in support.types:
        return [(f"input type {TensorProto.DataType.Name(elem)} not supported "
                 f"(TensorRT takes {sorted(support.types)})")]
    return []


def _graph_attrs(node: NodeProto) -> Iterator[tuple[str, GraphProto]]:
    for a in node.attribute:
        if a.type == AttributeProto.GRAPH:
            yield a.name, a.g
        elif a.type == AttributeProto.GRAPHS:
            for i, sub in enumerate(a.graphs):
                yield f"{a.name}[{i}]", sub


def _walk(graph: GraphProto, g: _Graph, prefix: str, functions: Mapping[tuple[str, str], onnx.FunctionProto],
          problems: list[Problem]) -> None:
    _collect_value_infos(graph, g)
    for idx, node in enumerate(graph.node):
        name = prefix + (node.name or f"node{idx}")
        _check_node(node, name, g, functions, problems)
        for attr_name, sub in _graph_attrs(node):
            # Outer-scope values stay visible inside the subgraph.
            inner = _Graph(dict(g.ranks), dict(g.types), dict(g.constants), g.opset)
            _walk(sub, inner, f"{name}/{attr_name}/", functions, problems)


def _check_node(node: NodeProto, name: str, g: _Graph,
                functions: Mapping[tuple[str, str], onnx.FunctionProto],
                problems: list[Problem]) -> None:
    function = functions.get((node.domain, node.op_type))
    if function is not None:
        # A model-local function: TensorRT inlines it, so its body is what must be supported.
        inner = _Graph({}, {}, {}, g.opset)
        for fnode_idx, fnode in enumerate(function.node):
            fname = f"{name}/{fnode.name or f'node{fnode_idx}'}"
            _check_node(fnode, fname, inner, functions, problems)
        return
    if node.domain not in _DEFAULT_DOMAINS:
        problems.append(Problem(name, node.op_type,
                                f"custom op in domain {node.domain!r}: needs a TensorRT plugin "
                                "(facecast graphs may use standard ONNX ops only)"))
        return
    support = TRT_OPS.get(node.op_type)
    if support is None:
        problems.append(Problem(name, node.op_type, "not in TensorRT's ONNX operator list"))
        return
    if not support.supported:
        problems.append(Problem(name, node.op_type, "not supported by TensorRT's ONNX parser"))
        return
    reasons = _check_dtype(node, g, support)
    check = _CHECKS.get(node.op_type)
    if check is not None:
        reasons += check(node, g)
    problems.extend(Problem(name, node.op_type, r) for r in reasons)


def _load(model: str | Path | ModelProto) -> ModelProto:
    if isinstance(model, ModelProto):
        return model
    path = Path(model)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX file not found: {path}")
    return onnx.load(str(path))


def default_opset(model: ModelProto) -> int:
    """The model's default-domain (``ai.onnx``) opset version; 0 if it imports none."""
    return max((o.version for o in model.opset_import if o.domain in _DEFAULT_DOMAINS), default=0)


def check_onnx(model: str | Path | ModelProto, min_opset: int = MIN_OPSET,
               max_opset: int = MAX_OPSET) -> list[Problem]:
    """Everything in an ONNX graph that TensorRT 10.x (or our opset rule) would refuse.

    Args:
        model: an .onnx path or a loaded ``onnx.ModelProto`` (not modified).
        min_opset: lowest accepted default-domain opset (project rule, 17).
        max_opset: highest accepted opset (20: what every TensorRT 10.x parses).

    Returns:
        One ``Problem`` per finding, in graph order; empty when the graph should parse.
        Shape inference (non-strict) supplies ranks and types; a GridSample or pooling input
        whose rank it cannot infer is reported rather than assumed fine.

    Raises ``FileNotFoundError`` for a missing path and ``onnx``'s errors for an unreadable file.
    """
    proto = _load(model)
    problems: list[Problem] = []
    opset = default_opset(proto)
    if opset < min_opset:
        problems.append(Problem("<model>", "", f"default-domain opset {opset} < {min_opset}: "
                                                "re-export with opset_version >= "
                                                f"{min_opset}"))
    elif opset > max_opset:
        problems.append(Problem("<model>", "", f"default-domain opset {opset} > {max_opset}: "
                                                "newer than some TensorRT 10.x parsers take"))
    try:
        inferred = onnx.shape_inference.infer_shapes(proto, check_type=False, strict_mode=False,
                                                     data_prop=True)
    except Exception:  # noqa: BLE001 - inference is best effort; ranks stay unknown then
        inferred = proto
    functions = {(f.domain, f.name): f for f in inferred.functions}
    _walk(inferred.graph, _Graph({}, {}, {}, opset), "", functions, problems)
    return problems


def assert_supported(model: str | Path | ModelProto, min_opset: int = MIN_OPSET,
                     max_opset: int = MAX_OPSET) -> None:
    """``check_onnx`` that raises ``ValueError`` listing every problem (one per line)."""
    problems = check_onnx(model, min_opset, max_opset)
    if problems:
        where = str(model) if not isinstance(model, ModelProto) else (model.graph.name or "model")
        lines = "\n".join(f"  - {p}" for p in problems)
        raise ValueError(f"{where}: {len(problems)} TensorRT incompatibilit"
                         f"{'y' if len(problems) == 1 else 'ies'}:\n{lines}")
