"""Safety checks of a client's ONNX model before onnxruntime sees it.

An ONNX model runs no client code in onnxruntime; its one way to reach the server's files is a
tensor whose bytes are "external data" (a path, read relative to the model's folder). This module
parses the bytes with protobuf only (``onnx.ModelProto.ParseFromString``: no external data is
loaded, nothing is executed) and refuses any tensor stored outside the model, wherever it hides:
graph initializers, sparse initializers, tensor-valued node attributes (``Constant`` and others),
subgraphs (``If``/``Loop``/``Scan`` bodies), model-local functions and training-info graphs.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import onnx

from ...errors import BadArgumentError

EXTERNAL = onnx.TensorProto.EXTERNAL


def parse_model(name: str, data: bytes) -> onnx.ModelProto:
    """The ModelProto in ``data``; BadArgumentError when the bytes are not one."""
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception as exc:  # protobuf's DecodeError, or a RuntimeWarning-free ValueError
        raise BadArgumentError(f"model {name!r} is not an ONNX model: {exc}") from None
    if not model.HasField("graph"):
        raise BadArgumentError(f"model {name!r} is not an ONNX model: it has no graph")
    return model


def _graph_tensors(graph: Any, where: str) -> Iterator[tuple[str, Any]]:
    for t in graph.initializer:
        yield f"{where} initializer {t.name!r}", t
    for s in graph.sparse_initializer:
        yield f"{where} sparse initializer {s.values.name!r} (values)", s.values
        yield f"{where} sparse initializer {s.values.name!r} (indices)", s.indices
    for node in graph.node:
        yield from _node_tensors(node, f"{where} node {node.name or node.op_type!r}")


def _node_tensors(node: Any, where: str) -> Iterator[tuple[str, Any]]:
    for attr in node.attribute:
        here = f"{where} attribute {attr.name!r}"
        if attr.HasField("t"):
            yield here, attr.t
        for t in attr.tensors:
            yield here, t
        if attr.HasField("sparse_tensor"):
            yield here, attr.sparse_tensor.values
            yield here, attr.sparse_tensor.indices
        for s in attr.sparse_tensors:
            yield here, s.values
            yield here, s.indices
        if attr.HasField("g"):
            yield from _graph_tensors(attr.g, f"{here} subgraph")
        for g in attr.graphs:
            yield from _graph_tensors(g, f"{here} subgraph")


def model_tensors(model: onnx.ModelProto) -> Iterator[tuple[str, Any]]:
    """Every TensorProto of the model, with where it sits (for the error message)."""
    yield from _graph_tensors(model.graph, "graph")
    for fn in model.functions:
        for node in fn.node:
            yield from _node_tensors(node, f"function {fn.name!r} node {node.name or node.op_type!r}")
    for i, info in enumerate(model.training_info):
        yield from _graph_tensors(info.initialization, f"training_info[{i}] initialization")
        yield from _graph_tensors(info.algorithm, f"training_info[{i}] algorithm")


def refuse_external_data(name: str, model: onnx.ModelProto) -> None:
    """BadArgumentError naming the first tensor whose data lives outside the model's bytes."""
    for where, tensor in model_tensors(model):
        if tensor.data_location == EXTERNAL or len(tensor.external_data) > 0:
            location = next((e.value for e in tensor.external_data if e.key == "location"), "?")
            raise BadArgumentError(
                f"model {name!r} is refused: {where} keeps its data in an external file "
                f"({location!r}); the server loads only self-contained ONNX models (save with "
                f"onnx.save_model(model, path, save_as_external_data=False))")


def checked_model(name: str, data: bytes) -> onnx.ModelProto:
    """Parse ``data`` and refuse external data (see the module docstring)."""
    model = parse_model(name, data)
    refuse_external_data(name, model)
    return model
