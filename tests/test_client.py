"""``Client`` without MPI, over the in-process backend: argument checks, SmartRedis key prefixes
(SSKEYOUT/SSKEYIN, set_data_source, use_*_ensemble_prefix), routing over shards, how a backend
is chosen, Dataset copies, and the error hierarchy."""

from __future__ import annotations

import json

import numpy as np
import pytest

import mpistage
from mpistage import BadArgumentError, Client, Dataset, KeyNotFoundError, MpistageError
from mpistage.backends import BACKENDS, Backend, backend_name, open_backend
from mpistage.backends.inprocess import InProcessStore
from mpistage.protocol import REPLY_MAGIC, Kind, WireError, pack_message, unpack_message
from mpistage.router import shard_of


def fresh(nshards: int = 3) -> tuple[Client, InProcessStore]:
    backend = InProcessStore.backend(nshards)
    return Client(backend=backend), backend.store  # type: ignore[return-value]


@pytest.fixture(autouse=True)
def no_prefixes(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SSKEYOUT", "SSKEYIN", "MPISTAGE_ADDRESS"):
        monkeypatch.delenv(name, raising=False)


# ---------------------------------------------------------------- argument checks

@pytest.mark.parametrize("call, exc", [
    (lambda c: c.put_tensor("k", [1, 2, 3]), TypeError),
    (lambda c: c.put_tensor("k", np.zeros(3, np.complex64)), TypeError),
    (lambda c: c.put_tensor(7, np.zeros(3)), TypeError),
    (lambda c: c.put_tensor("", np.zeros(3)), ValueError),
    (lambda c: c.put_tensor("k" * 2000, np.zeros(3)), ValueError),
    (lambda c: c.get_tensor("missing"), KeyNotFoundError),
    (lambda c: c.copy_tensor("missing", "x"), KeyNotFoundError),
    (lambda c: c.unpack_tensor("t", [0.0] * 6), TypeError),
    (lambda c: c.unpack_tensor("t", np.empty(5)), BadArgumentError),
    (lambda c: c.unpack_tensor("t", np.empty((2, 3), np.float32)), BadArgumentError),
    (lambda c: c.put_dataset("ds"), TypeError),
    (lambda c: c.append_to_list("l", "ds"), TypeError),
    (lambda c: c.get_dataset("missing"), KeyNotFoundError),
    (lambda c: c.key_exists(""), ValueError),
    (lambda c: c.set_data_source("elsewhere"), BadArgumentError),
    (lambda c: c.set_model("m", b"x", backend="TF"), BadArgumentError),
    (lambda c: c.set_model("m", b"x", device="TPU"), TypeError),
    (lambda c: c.set_model("m", b"x", batch_size=-1), BadArgumentError),
    (lambda c: c.set_model("m", "model.pt"), TypeError),
    (lambda c: c.set_script("s", b"def f(x): return x"), TypeError),
    (lambda c: c.run_model("m", [], "out"), BadArgumentError),
    (lambda c: c.run_script("s", "", "x", "out"), TypeError),
])
def test_bad_arguments_raise_documented_errors(call, exc):
    c, _ = fresh()
    c.put_tensor("t", np.zeros((2, 3)))
    with pytest.raises(exc):
        call(c)
    assert np.array_equal(c.get_tensor("t"), np.zeros((2, 3)))  # nothing else changed


def test_bad_argument_errors_are_value_errors_and_mpistage_errors():
    assert issubclass(BadArgumentError, ValueError) and issubclass(BadArgumentError, MpistageError)
    assert issubclass(KeyNotFoundError, KeyError) and issubclass(KeyNotFoundError, MpistageError)


def test_a_backend_without_an_engine_says_so():
    c, _ = fresh()
    with pytest.raises(BadArgumentError, match="runs no models"):
        c.set_model("m", b"bytes")
    with pytest.raises(BadArgumentError, match="runs no models"):
        c.run_model("m", "x", "y")


# ---------------------------------------------------------------- tensors, datasets, lists

@pytest.mark.parametrize("array", [
    np.arange(24, dtype=np.int16).reshape(2, 3, 4),
    np.asfortranarray(np.arange(6.0).reshape(2, 3)),
    np.arange(20.0)[::3],
    np.zeros((0, 4), np.uint8),
    np.arange(4, dtype=">i4"),
])
def test_tensor_roundtrip_keeps_values_and_order(array):
    c, _ = fresh()
    c.put_tensor("a", array)
    back = c.get_tensor("a")
    assert np.array_equal(back, array) and back.shape == array.shape
    assert back.dtype.newbyteorder("=") == array.dtype.newbyteorder("=")
    if array.ndim > 1 and array.flags.f_contiguous and not array.flags.c_contiguous:
        assert back.flags.f_contiguous
    out = np.empty(array.shape, array.dtype.newbyteorder("="), order="C")
    c.unpack_tensor("a", out)
    assert np.array_equal(out, array)


def test_stored_tensors_are_copies():
    c, _ = fresh()
    a = np.ones(4)
    c.put_tensor("a", a)
    a[:] = 5
    got = c.get_tensor("a")
    got[:] = 7
    assert np.array_equal(c.get_tensor("a"), np.ones(4))


def test_datasets_lists_copy_rename_delete():
    c, _ = fresh()
    ds = Dataset("ds")
    ds.add_tensor("u", np.arange(3.0))
    ds.add_meta_scalar("t", 1.5)
    ds.add_meta_string("units", "m/s")
    c.put_dataset(ds)
    back = c.get_dataset("ds")
    assert back.get_name() == "ds" and np.array_equal(back.get_tensor("u"), np.arange(3.0))
    assert back.get_meta_strings("units") == ["m/s"]
    for i in range(4):
        c.append_to_list("l", ds)
        c.copy_dataset("ds", f"ds{i}")
        c.rename_dataset(f"ds{i}", f"moved{i}")
        assert c.dataset_exists(f"moved{i}") and not c.dataset_exists(f"ds{i}")
    assert c.get_list_length("l") == 4 and c.get_list_length("none") == 0
    assert [d.get_name() for d in c.get_dataset_list_range("l", -2, -1)] == ["ds", "ds"]
    c.copy_list("l", "l2")
    c.rename_list("l2", "l3")
    assert c.get_list_length("l3") == 4 and c.get_list_length("l2") == 0
    c.delete_list("l3")
    assert not c.key_exists("l3") and c.key_exists("l")
    c.delete_dataset("moved0")
    assert not c.poll_dataset("moved0", 1, 2) and c.poll_list_length_gte("l", 4, 1, 1)
    c.flush()  # nothing to publish in process, but callable on every backend


def test_dataset_add_tensor_copies_the_callers_array():
    ds = Dataset("d")
    a = np.arange(4.0)
    ds.add_tensor("a", a)
    a[:] = -1
    assert np.array_equal(ds.get_tensor("a"), np.arange(4.0))


# ---------------------------------------------------------------- prefixes

def test_ensemble_prefixes(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SSKEYOUT", "member1")
    monkeypatch.setenv("SSKEYIN", "member0,member1")
    c, _ = fresh()
    c.put_tensor("u", np.ones(2))
    assert c.key_exists("member1.u") and not c.key_exists("u")
    assert not c.tensor_exists("u")  # reads with member0 by default
    c.set_data_source("member1")
    assert c.tensor_exists("u") and np.array_equal(c.get_tensor("u"), np.ones(2))
    c.use_tensor_ensemble_prefix(False)
    c.put_tensor("plain", np.zeros(1))
    assert c.key_exists("plain") and c.tensor_exists("plain")

    ds = Dataset("ds")
    ds.add_tensor("x", np.ones(1))
    c.put_dataset(ds)
    c.append_to_list("agg", ds)
    assert c.key_exists("member1.ds") and c.key_exists("member1.agg")
    assert c.get_dataset("ds").get_name() == "ds"  # the name the caller used, without prefix
    assert [d.get_name() for d in c.get_datasets_from_list("agg")] == ["member1.ds"]
    c.use_dataset_ensemble_prefix(False)
    c.use_list_ensemble_prefix(False)
    c.put_dataset(ds)
    assert c.key_exists("ds") and c.get_list_length("agg") == 0


def test_model_prefix_is_off_by_default(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SSKEYOUT", "out")
    monkeypatch.setenv("SSKEYIN", "in")
    c, _ = fresh()
    assert c._key("m", Kind.MODEL, False) == "m" and c._key("s", Kind.SCRIPT) == "s"
    c.use_model_ensemble_prefix(True)
    assert c._key("m", Kind.MODEL, False) == "out.m" and c._key("s", Kind.SCRIPT) == "in.s"
    assert c._key("t", Kind.TENSOR, False) == "out.t"


# ---------------------------------------------------------------- routing

def test_keys_land_on_the_shard_the_router_names():
    c, store = fresh(4)
    assert c.nshards == 4
    names = [f"k{i}" for i in range(40)] + ["{run}.u", "{run}.v"]
    for n in names:
        c.put_tensor(n, np.zeros(1))
    counts = [s["tensors"] for s in c.get_server_info()]
    assert counts == [sum(shard_of(n, 4) == s for n in names) for s in range(4)]
    assert store.shard_of("{run}.u") == store.shard_of("{run}.v") == shard_of("run", 4)
    a, b = next((x, y) for x in names for y in names if shard_of(x, 4) != shard_of(y, 4))
    c.copy_tensor(a, f"{b}.copy")  # across shards
    c.rename_tensor(f"{b}.copy", f"{a}.moved")
    assert c.tensor_exists(f"{a}.moved") and not c.tensor_exists(f"{b}.copy")


# ---------------------------------------------------------------- choosing a backend

def test_the_connection_file_names_the_backend(tmp_path):
    path = tmp_path / "address"
    path.write_text(json.dumps({"backend": "inprocess"}))
    c = Client(address=str(path))
    assert c.backend == "inprocess"
    c.put_tensor("x", np.ones(1))
    assert np.array_equal(Client(backend="inprocess").get_tensor("x"), np.ones(1))  # one per process
    path.write_text(json.dumps({"port": "p", "shards": 1, "protocol": 1}))
    assert backend_name(str(path)) == "mpi"  # absent: the MPI backend
    assert backend_name(None) == "mpi"


def test_unknown_backend_is_a_clear_error():
    with pytest.raises(BadArgumentError, match="unknown backend 'nope'"):
        Client(backend="nope")


def test_a_new_backend_is_one_registry_entry(monkeypatch: pytest.MonkeyPatch):
    made = []

    def create(address, comm):
        made.append(address)
        return Backend("custom", InProcessStore(2))

    monkeypatch.setitem(BACKENDS, "custom", create)
    c = Client(backend="custom", address="somewhere")
    assert made == ["somewhere"] and c.backend == "custom" and c.nshards == 2
    c.put_tensor("x", np.arange(3))
    assert np.array_equal(c.get_tensor("x"), np.arange(3))
    obj = Backend("object", InProcessStore())
    assert open_backend(obj) is obj


def test_closed_backend_is_unreachable():
    c, _ = fresh()
    c.shutdown_servers()
    with pytest.raises(mpistage.ServerUnreachableError):
        c.put_tensor("x", np.ones(1))


# ---------------------------------------------------------------- errors

def test_malformed_reply_is_a_protocol_error():
    assert WireError is mpistage.ProtocolError
    with pytest.raises(MpistageError):
        unpack_message(b"XXXX" + pack_message(REPLY_MAGIC, 0, 16, [b"x"])[4:], REPLY_MAGIC)
    with pytest.raises(mpistage.ProtocolError):
        unpack_message(pack_message(REPLY_MAGIC, 0, 16, [b"abc"])[:-1], REPLY_MAGIC)


def test_every_exported_error_is_an_mpistage_error_and_run_handle_is_exported():
    errors = [getattr(mpistage, n) for n in mpistage.__all__ if n.endswith("Error")]
    assert errors and all(issubclass(e, MpistageError) for e in errors)
    assert isinstance(mpistage.RunHandle, type)
