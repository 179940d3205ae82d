"""The bridge's checks without MPI or servers: the specs a shard refuses, the clear error of a
shard without adios2, and the refusal of backends without server ranks."""

from __future__ import annotations

import json

import pytest

from mpistage import Client
from mpistage.backends.inprocess import InProcessStore
from mpistage.errors import BadArgumentError, ServerRuntimeError
from mpistage.protocol import REQUEST_MAGIC, Op, key_field, pack_message, unpack_message
from mpistage.server.bridge import BridgeHandlers, ExportSpec, IngestSpec
from mpistage.server.handlers import Request
from mpistage.server.store import ShardStore


def request(op: Op, name: str, spec: dict | None) -> Request:
    fields = [key_field(name)] + ([json.dumps(spec).encode()] if spec is not None else [])
    header, decoded = unpack_message(pack_message(REQUEST_MAGIC, op, 16, fields), REQUEST_MAGIC)
    return Request(None, 0, header, decoded, [])


@pytest.mark.parametrize(("spec", "text"), [
    ({"engine": "HDF5", "path": "/x", "tensors": ["a"]}, "not supported"),
    ({"engine": "BP5", "tensors": ["a"]}, "'path'"),
    ({"engine": "BP5", "path": "/x"}, "some tensors or datasets"),
    ({"engine": "BP5", "path": "/x", "tensors": "a"}, "list of non-empty strings"),
    ({"engine": "BP5", "path": "/x", "tensors": ["a"], "params": {"QueueLimit": 8}}, "strings to strings"),
    ({"engine": "BP5", "path": "/x", "tensors": ["a"], "code": "rm -rf"}, "unknown bridge spec fields"),
])
def test_export_specs_refused(spec, text):
    with pytest.raises(BadArgumentError, match=text):
        ExportSpec.parse(memoryview(json.dumps(spec).encode()))


@pytest.mark.parametrize(("spec", "text"), [
    ({"engine": "SST", "path": "/x", "timeout_s": 0}, "positive number"),
    ({"engine": "SST", "path": "/x", "steps": 0}, "positive integer"),
    ({"engine": "SST", "path": "/x", "step_keys": "yes"}, "true or false"),
])
def test_ingest_specs_refused(spec, text):
    with pytest.raises(BadArgumentError, match=text):
        IngestSpec.parse(memoryview(json.dumps(spec).encode()))
    with pytest.raises(BadArgumentError, match="UTF-8 JSON"):
        IngestSpec.parse(memoryview(b"\x80not json"))


def test_a_shard_without_adios2_refuses_clearly(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "adios2", None)  # as if it were not installed
    handlers = BridgeHandlers(0, 1, ShardStore(), loop=None)  # type: ignore[arg-type]  # never reached
    for op, spec in ((Op.BRIDGE_EXPORT, {"engine": "BP5", "path": "/x", "tensors": ["a"]}),
                     (Op.BRIDGE_INGEST, {"engine": "SST", "path": "/x"})):
        with pytest.raises(ServerRuntimeError, match="needs the adios2 package on the server ranks"):
            handlers.table()[op](request(op, "b", spec))
    assert handlers.bridges == {}
    with pytest.raises(BadArgumentError, match="no bridge 'b'"):
        handlers.stop(request(Op.BRIDGE_STOP, "b", None))
    with pytest.raises(BadArgumentError, match="no export 'b'"):
        handlers.export(request(Op.BRIDGE_EXPORT, "b", None))
    with pytest.raises(BadArgumentError, match="'wait_s' must be a number of seconds"):
        handlers.stop(request(Op.BRIDGE_STOP, "b", {"wait_s": -1}))


def test_backends_without_servers_refuse_the_bridge():
    client = Client(backend=InProcessStore.backend())
    with pytest.raises(BadArgumentError, match="needs the MPI backend"):
        client.bridge_export("b", "BP5", "/tmp/x.bp", tensors=["a"])
    with pytest.raises(BadArgumentError, match="needs the MPI backend"):
        client.bridge_stop("b")
