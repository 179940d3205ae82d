"""The EKE preprocessing of :mod:`inference.eke_features` as models, not TorchScript scripts: a
``torch.export`` program (backend TORCH) and an ONNX model (backend ONNX), each run with
``run_model(name, [features, means, stds], [out])``. They compute
:func:`~inference.eke_features.preprocess` (log transforms, then standardization) on ``(N, 4)``
float32 features with ``(4,)`` float32 means and stds, N free (dim 0 dynamic). A server started
with ``--no-scripts`` (or ``--backends ONNX``) still preprocesses this way.

The ONNX model is written node by node with ``onnx.helper`` (no exporter, so it is the same bytes
with every torch version); both are checked against the numpy and torch functions in
tests/test_inference_models.py.
"""

from __future__ import annotations

import io

import numpy as np
import torch
from torch import Tensor, nn

from inference.eke_features import EKE_NUM_FEATURES, SIGNED_LOG_C, preprocess

#: The opset the ONNX preprocessing uses (onnxruntime >= 1.14 runs it).
EKE_ONNX_OPSET = 17


class EKEPreprocess(nn.Module):
    """:func:`~inference.eke_features.preprocess` as a module, for ``torch.export``."""

    def forward(self, features: Tensor, means: Tensor, stds: Tensor) -> Tensor:
        return preprocess(features, means, stds)


def eke_preprocess_program(example_rows: int = 8) -> bytes:
    """The ``.pt2`` bytes (``torch.export.save``) of :class:`EKEPreprocess`, dim 0 of the
    features dynamic (the example has ``example_rows`` >= 2 rows, so torch does not specialize it)."""
    if example_rows < 2:
        raise ValueError("export with at least 2 example rows, or torch fixes the batch dimension")
    example = (torch.ones(example_rows, EKE_NUM_FEATURES), torch.zeros(EKE_NUM_FEATURES),
               torch.ones(EKE_NUM_FEATURES))
    program = torch.export.export(EKEPreprocess(), example,
                                  dynamic_shapes=({0: torch.export.Dim("rows", min=1)}, None, None))
    buf = io.BytesIO()
    torch.export.save(program, buf)
    return buf.getvalue()


def eke_preprocess_onnx() -> bytes:
    """The serialized ONNX model of :func:`~inference.eke_features.preprocess` (float32)."""
    from onnx import TensorProto, helper

    f32 = TensorProto.FLOAT

    def const(name: str, value: np.ndarray, dtype: int = f32) -> object:
        return helper.make_node("Constant", [], [name], value=helper.make_tensor(
            f"{name}_value", dtype, list(value.shape), value.ravel().tolist()))

    nodes = [
        const("zero", np.zeros((), np.float32)),
        const("one", np.ones((), np.float32)),
        const("c", np.array(SIGNED_LOG_C, np.float32)),
        const("log_cols", np.array([[True, False, True, False]]), TensorProto.BOOL),
        const("signed_cols", np.array([[False, True, False, False]]), TensorProto.BOOL),
        const("row", np.array([1, EKE_NUM_FEATURES], np.int64), TensorProto.INT64),
        helper.make_node("Log", ["x"], ["log_x"]),  # columns 0 and 2: ln(x)
        helper.make_node("Equal", ["x", "zero"], ["is_zero"]),  # column 1: sign(x) (ln|x| + C), 0 at 0
        helper.make_node("Abs", ["x"], ["abs_x"]),
        helper.make_node("Where", ["is_zero", "one", "abs_x"], ["safe"]),
        helper.make_node("Log", ["safe"], ["log_safe"]),
        helper.make_node("Add", ["log_safe", "c"], ["shifted"]),
        helper.make_node("Sign", ["x"], ["sign_x"]),
        helper.make_node("Mul", ["sign_x", "shifted"], ["signed_raw"]),
        helper.make_node("Where", ["is_zero", "zero", "signed_raw"], ["signed"]),
        helper.make_node("Where", ["signed_cols", "signed", "x"], ["partial"]),  # column 3: unchanged
        helper.make_node("Where", ["log_cols", "log_x", "partial"], ["logged"]),
        helper.make_node("Reshape", ["means", "row"], ["means_row"]),
        helper.make_node("Reshape", ["stds", "row"], ["stds_row"]),
        helper.make_node("Sub", ["logged", "means_row"], ["centered"]),
        helper.make_node("Div", ["centered", "stds_row"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "eke_preprocess",
        [helper.make_tensor_value_info("x", f32, ["rows", EKE_NUM_FEATURES]),
         helper.make_tensor_value_info("means", f32, [EKE_NUM_FEATURES]),
         helper.make_tensor_value_info("stds", f32, [EKE_NUM_FEATURES])],
        [helper.make_tensor_value_info("y", f32, ["rows", EKE_NUM_FEATURES])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", EKE_ONNX_OPSET)],
                              producer_name="mpistage.inference")
    model.ir_version = 8  # what onnxruntime >= 1.14 reads
    return model.SerializeToString()
