"""engines.tensorrt.support: every committed ONNX graph passes TensorRT's documented operator support;
synthetic graphs show each rule rejects what it should."""

from __future__ import annotations

from pathlib import Path

import pytest

onnx = pytest.importorskip("onnx", reason="the onnx package (train extra) checks graphs")
from onnx import TensorProto, helper

from engines.tensorrt.support import (
    MIN_OPSET,
    TRT_OPS,
    Problem,
    assert_supported,
    check_onnx,
)

MODELS = sorted((Path(__file__).resolve().parents[1] / "engines" / "models").glob("*.onnx"))


def _model(nodes: list, inputs: list, outputs: list, opset: int = 17,
           extra_opsets: tuple = ()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs)
    opsets = [helper.make_opsetid("", opset), *extra_opsets]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    return model


def _gridsample(rank: int, opset: int = 17, **attrs: object) -> onnx.ModelProto:
    spatial = [8] * (rank - 2)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, *spatial])
    grid = helper.make_tensor_value_info("grid", TensorProto.FLOAT, [1, *spatial, rank - 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    node = helper.make_node("GridSample", ["x", "grid"], ["y"], name="warp", **attrs)
    return _model([node], [x, grid], [y], opset)


def test_committed_models_exist() -> None:
    assert any(p.name == "motion.onnx" for p in MODELS)


@pytest.mark.parametrize("path", MODELS, ids=[p.name for p in MODELS])
def test_committed_models_are_tensorrt_compatible(path: Path) -> None:
    """motion.onnx today; renderer_*.onnx as they are committed."""
    assert check_onnx(path) == []
    assert_supported(path)


def test_table_covers_the_ops_our_networks_export() -> None:
    needed = ("Conv", "ConvTranspose", "Relu", "LeakyRelu", "Sigmoid", "Tanh", "Softmax", "Add",
              "Sub", "Mul", "Div", "Pow", "Sqrt", "Exp", "Log", "Abs", "Neg", "Clip", "Min", "Max",
              "ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceL2", "MatMul", "Gemm",
              "Reshape", "Transpose", "Concat", "Split", "Slice", "Gather", "Unsqueeze", "Squeeze",
              "Shape", "Expand", "Tile", "Cast", "Constant", "ConstantOfShape", "Where", "Equal",
              "Less", "Greater", "Not", "And", "Resize", "GridSample", "AveragePool", "MaxPool",
              "BatchNormalization", "InstanceNormalization", "Pad", "GRU", "LSTM", "Erf", "Range",
              "Identity", "Flatten")
    assert [op for op in needed if not (op in TRT_OPS and TRT_OPS[op].supported)] == []
    assert TRT_OPS["GridSample"].types == {"FP32", "FP16"}
    assert not TRT_OPS["ConvInteger"].supported


def test_4d_bilinear_gridsample_accepted() -> None:
    model = _gridsample(4, mode="bilinear", padding_mode="border", align_corners=1)
    assert check_onnx(model) == []


def test_opset20_gridsample_names_accepted() -> None:
    assert check_onnx(_gridsample(4, opset=20, mode="linear")) == []
    assert check_onnx(_gridsample(4, opset=20, mode="cubic", padding_mode="reflection")) == []


def test_5d_gridsample_rejected() -> None:
    problems = check_onnx(_gridsample(5, mode="bilinear"))
    assert problems and all(p.node_name == "warp" and p.op_type == "GridSample"
                            for p in problems)
    assert any("5-D" in p.reason for p in problems)
    with pytest.raises(ValueError, match="GridSample"):
        assert_supported(_gridsample(5))


@pytest.mark.parametrize(("opset", "attrs"), [
    (17, {"mode": "lanczos"}),
    (17, {"mode": "linear"}),        # the opset-20 name in an opset-17 graph
    (20, {"mode": "bilinear"}),      # the opset-16 name in an opset-20 graph
    (17, {"padding_mode": "wrap"}),
])
def test_gridsample_attribute_values_rejected(opset: int, attrs: dict) -> None:
    problems = check_onnx(_gridsample(4, opset=opset, **attrs))
    key = next(iter(attrs))
    assert len(problems) == 1 and key in problems[0].reason


def test_custom_domain_op_rejected() -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    node = helper.make_node("FusedWarp", ["x"], ["y"], name="custom", domain="com.example")
    model = _model([node], [x], [y], extra_opsets=(helper.make_opsetid("com.example", 1),))
    problems = check_onnx(model)
    assert [(p.node_name, p.op_type) for p in problems] == [("custom", "FusedWarp")]
    assert "plugin" in problems[0].reason


def test_unsupported_standard_op_rejected() -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    node = helper.make_node("Col2Im", ["x", "s", "b"], ["y"], name="c2i")
    shape = helper.make_tensor("s", TensorProto.INT64, [2], [8, 8])
    model = _model([node], [x], [y])
    model.graph.initializer.extend([shape, helper.make_tensor("b", TensorProto.INT64, [2],
                                                              [2, 2])])
    assert [p.op_type for p in check_onnx(model)] == ["Col2Im"]


def test_old_opset_rejected() -> None:
    problems = check_onnx(_gridsample(4, opset=16, mode="bilinear"))
    assert problems == [Problem("<model>", "", problems[0].reason)]
    assert f">= {MIN_OPSET}" in problems[0].reason


def test_resize_and_pad_rules() -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    scales = helper.make_tensor("scales", TensorProto.FLOAT, [4], [1, 1, 2, 2])
    ok = helper.make_node("Resize", ["x", "", "scales"], ["y"], name="up", mode="linear",
                          coordinate_transformation_mode="half_pixel")
    model = _model([ok], [x], [y])
    model.graph.initializer.append(scales)
    assert check_onnx(model) == []

    bad = helper.make_node("Resize", ["x", "", "scales"], ["y"], name="up", mode="cubic",
                           coordinate_transformation_mode="tf_crop_and_resize", antialias=1)
    model = _model([bad], [x], [y], opset=18)
    model.graph.initializer.append(scales)
    reasons = " ".join(p.reason for p in check_onnx(model))
    assert "mode 'cubic'" in reasons and "tf_crop_and_resize" in reasons
    assert "antialias" in reasons

    pads = helper.make_tensor("pads", TensorProto.INT64, [8], [0, 0, 1, 1, 0, 0, 1, 1])
    for mode, expected in (("reflect", 0), ("edge", 0), ("mirror", 1)):
        node = helper.make_node("Pad", ["x", "pads"], ["y"], name="pad", mode=mode)
        model = _model([node], [x], [y])
        model.graph.initializer.append(pads)
        assert len(check_onnx(model)) == expected, mode


def test_pool_rank_and_indices() -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    idx = helper.make_tensor_value_info("i", TensorProto.INT64, None)
    node = helper.make_node("MaxPool", ["x"], ["y", "i"], name="pool", kernel_shape=[2])
    reasons = [p.reason for p in check_onnx(_model([node], [x], [y, idx]))]
    assert any("3-D" in r for r in reasons) and any("Indices" in r for r in reasons)


def test_subgraph_nodes_are_checked() -> None:
    cond = helper.make_tensor_value_info("cond", TensorProto.BOOL, [])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    out = helper.make_tensor_value_info("o", TensorProto.FLOAT, None)
    then_graph = helper.make_graph(
        [helper.make_node("Unique", ["c"], ["o"], name="uniq")], "then", [], [out],
        initializer=[helper.make_tensor("c", TensorProto.FLOAT, [2], [1.0, 2.0])])
    else_graph = helper.make_graph(
        [helper.make_node("Identity", ["c2"], ["o"], name="ident")], "else", [], [out],
        initializer=[helper.make_tensor("c2", TensorProto.FLOAT, [2], [1.0, 2.0])])
    node = helper.make_node("If", ["cond"], ["y"], name="branch", then_branch=then_graph,
                            else_branch=else_graph)
    problems = check_onnx(_model([node], [cond], [y]))
    assert [(p.node_name, p.op_type) for p in problems] == [("branch/then_branch/uniq", "Unique")]


def test_unsupported_input_type_rejected() -> None:
    x = helper.make_tensor_value_info("x", TensorProto.INT32, [2, 2])
    y = helper.make_tensor_value_info("y", TensorProto.INT32, None)
    node = helper.make_node("MatMul", ["x", "x"], ["y"], name="mm")
    problems = check_onnx(_model([node], [x], [y]))
    assert len(problems) == 1 and "INT32" in problems[0].reason
