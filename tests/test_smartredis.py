"""``mpistage.smartredis`` without MPI (a connection file naming the in-process backend): the
argument-check table (SmartRedis's TypeError for every public method), constructor forms, SSDB
and ConfigOptions, the error hierarchy, Dataset's additions, logging, and the docs table of
names (docs/smartredis.md) against the code."""

from __future__ import annotations

import inspect
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import mpistage
import mpistage.smartredis as smartredis
from mpistage.protocol import pack_metadata, unpack_metadata
from mpistage.smartredis import Client, ConfigOptions, Dataset, DatasetConverter, LogContext, error
from mpistage.smartredis.util import Dtypes

DOC = Path(__file__).resolve().parents[1] / "docs" / "smartredis.md"


@pytest.fixture
def ssdb(tmp_path, monkeypatch: pytest.MonkeyPatch) -> str:
    for name in ("SSKEYOUT", "SSKEYIN", "MPISTAGE_ADDRESS", "SR_LOG_FILE", "SR_LOG_LEVEL"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "address"
    path.write_text(json.dumps({"backend": "inprocess"}))
    monkeypatch.setenv("SSDB", str(path))
    return str(path)


@pytest.fixture
def client(ssdb: str) -> Client:
    return Client(None, logger_name="test")


# ---------------------------------------------------------------- argument checks (TypeError)

ARRAY, DS = np.zeros(3), Dataset("ds")
#: what the checks' messages say (a TypeError for a wrong number of arguments says none of it)
CHECKED = "must|unknown|scalar|not supported|takes the model"
NOT_STR, NOT_ARR, NOT_INT, NOT_BOOL, NOT_LIST = 7, [1.0, 2.0], "3", 1, ("a",)

CLIENT_TYPE_ERRORS = [
    ("put_tensor", (NOT_STR, ARRAY)), ("put_tensor", ("t", NOT_ARR)),
    ("get_tensor", (NOT_STR,)), ("unpack_tensor", ("t", NOT_ARR)), ("unpack_tensor", (NOT_STR, ARRAY)),
    ("delete_tensor", (NOT_STR,)), ("copy_tensor", (NOT_STR, "b")), ("copy_tensor", ("a", NOT_STR)),
    ("rename_tensor", (NOT_STR, "b")), ("rename_tensor", ("a", NOT_STR)), ("tensor_exists", (NOT_STR,)),
    ("poll_tensor", (NOT_STR, 1, 1)), ("poll_tensor", ("t", NOT_INT, 1)), ("poll_tensor", ("t", 1, NOT_INT)),
    ("put_dataset", ("ds",)), ("get_dataset", (NOT_STR,)), ("delete_dataset", (NOT_STR,)),
    ("copy_dataset", (NOT_STR, "b")), ("rename_dataset", ("a", NOT_STR)), ("dataset_exists", (NOT_STR,)),
    ("poll_dataset", (NOT_STR, 1, 1)), ("poll_dataset", ("d", 1.5, 1)),
    ("key_exists", (NOT_STR,)), ("poll_key", (NOT_STR, 1, 1)), ("poll_key", ("k", 1, None)),
    ("append_to_list", (NOT_STR, DS)), ("append_to_list", ("l", "ds")), ("delete_list", (NOT_STR,)),
    ("copy_list", (NOT_STR, "b")), ("rename_list", ("a", NOT_STR)), ("get_list_length", (NOT_STR,)),
    ("poll_list_length", (NOT_STR, 1, 1, 1)), ("poll_list_length", ("l", NOT_INT, 1, 1)),
    ("poll_list_length_gte", ("l", 1, NOT_INT, 1)), ("poll_list_length_lte", ("l", 1, 1, NOT_INT)),
    ("get_datasets_from_list", (NOT_STR,)), ("get_dataset_list_range", (NOT_STR, 0, 1)),
    ("get_dataset_list_range", ("l", NOT_INT, 1)), ("get_dataset_list_range", ("l", 0, 1.0)),
    ("set_data_source", (NOT_STR,)),
    ("use_tensor_ensemble_prefix", (NOT_BOOL,)), ("use_dataset_ensemble_prefix", ("yes",)),
    ("use_list_ensemble_prefix", (NOT_BOOL,)), ("use_model_ensemble_prefix", (None,)),
    ("set_model", (NOT_STR, b"m", "TORCH")), ("set_model", ("m", b"m", NOT_STR)),
    ("set_model", ("m", b"m", "NOPE")), ("set_model", ("m", b"m", "TORCH", "TPU")),
    ("set_model", ("m", b"m", "TORCH", NOT_STR)), ("set_model", ("m", b"m", "TORCH", "CPU", NOT_INT)),
    ("set_model", ("m", b"m", "TORCH", "CPU", 0, 1.0)), ("set_model", ("m", b"m", "TORCH", "CPU", 0, 0, "1")),
    ("set_model", ("m", b"m", "TORCH", "CPU", 0, 0, 0, NOT_STR)),
    ("set_model", ("m", b"m", "TORCH", "CPU", 0, 0, 0, "", NOT_LIST)),
    ("set_model", ("m", b"m", "TORCH", "CPU", 0, 0, 0, "", None, [NOT_STR])),
    ("set_model", ("m", "model.pt", "TORCH")),
    ("set_model_from_file", ("m", NOT_STR, "TORCH")), ("set_model_from_file", ("m", "f.pt", "NOPE")),
    ("set_model_multigpu", ("m", b"m", "TORCH", NOT_INT, 1)), ("set_model_multigpu", ("m", b"m", "TORCH", 0, 1.0)),
    ("set_model_from_file_multigpu", ("m", "f.pt", "TORCH", "0", 1)),
    ("get_model", (NOT_STR,)), ("delete_model", (NOT_STR,)), ("delete_model_multigpu", ("m", 0, NOT_INT)),
    ("model_exists", (NOT_STR,)), ("poll_model", (NOT_STR, 1, 1)), ("poll_model", ("m", 1, NOT_INT)),
    ("run_model", (NOT_STR, "a", "b")), ("run_model", ("m", NOT_LIST, "b")), ("run_model", ("m", "a", [NOT_STR])),
    ("run_model_multigpu", ("m", NOT_INT, 0, 1, "a", "b")), ("run_model_multigpu", ("m", 0, NOT_INT, 1)),
    ("set_script", (NOT_STR, "def f(x): return x")), ("set_script", ("s", b"def f(x): return x")),
    ("set_script", ("s", "def f(x): return x", "TPU")), ("set_script", ("s", "def f(x): return x", NOT_STR)),
    ("set_script_from_file", ("s", NOT_STR)), ("set_script_multigpu", ("s", "src", NOT_INT, 1)),
    ("set_script_from_file_multigpu", ("s", "f.py", 0, NOT_INT)),
    ("set_function", ("f", "not callable")), ("set_function", (NOT_STR, abs)),
    ("set_function_multigpu", ("f", abs, NOT_INT, 1)),
    ("get_script", (NOT_STR,)), ("delete_script", (NOT_STR,)), ("delete_script_multigpu", ("s", NOT_INT, 1)),
    ("run_script", ("s", NOT_STR, "a", "b")), ("run_script", (NOT_STR, "f", "a", "b")),
    ("run_script", ("s", "f", NOT_LIST, "b")), ("run_script_multigpu", ("s", "f", "a", "b", NOT_INT, 0, 1)),
    ("get_db_node_info", ("shard:0",)), ("get_db_node_info", ([NOT_STR],)), ("get_db_cluster_info", (NOT_LIST,)),
    ("get_ai_info", ("shard:0", "m")), ("get_ai_info", (["shard:0"], NOT_STR)),
    ("get_ai_info", (["shard:0"], "m", NOT_BOOL)), ("flush_db", ("shard:0",)),
    ("config_get", (NOT_STR, "shard:0")), ("config_get", ("*", ["shard:0"])),
    ("config_set", ("maxmemory", 5, "shard:0")), ("save", ("shard:0",)),
    ("set_model_chunk_size", (NOT_INT,)),
]


@pytest.mark.parametrize("method, args", CLIENT_TYPE_ERRORS, ids=lambda v: v if isinstance(v, str) else "")
def test_client_arguments_of_the_wrong_type_raise_type_error(client: Client, method: str, args: tuple):
    client.put_tensor("t", np.zeros(3))
    with pytest.raises(TypeError, match=CHECKED):
        getattr(client, method)(*args)
    assert np.array_equal(client.get_tensor("t"), np.zeros(3))  # nothing else changed


DATASET_TYPE_ERRORS = [
    ("add_tensor", (NOT_STR, ARRAY)), ("add_tensor", ("t", NOT_ARR)), ("get_tensor", (NOT_STR,)),
    ("add_meta_scalar", (NOT_STR, 1)), ("add_meta_scalar", ("m", [1, 2])), ("add_meta_scalar", ("m", "x")),
    ("add_meta_string", (NOT_STR, "x")), ("add_meta_string", ("m", 5)), ("get_meta_scalars", (NOT_STR,)),
    ("get_meta_strings", (NOT_STR,)), ("get_metadata_field_type", (NOT_STR,)),
    ("get_tensor_type", (NOT_STR,)), ("get_tensor_dims", (NOT_STR,)), ("log_data", ("not a level", "x")),
]


@pytest.mark.parametrize("method, args", DATASET_TYPE_ERRORS, ids=lambda v: v if isinstance(v, str) else "")
def test_dataset_arguments_of_the_wrong_type_raise_type_error(method: str, args: tuple):
    with pytest.raises(TypeError, match=CHECKED):
        getattr(Dataset("d"), method)(*args)


@pytest.mark.parametrize("call, exc", [
    (lambda c: c.set_model("m", b"x", "TORCH", batch_size=0, min_batch_size=2), error.RedisReplyError),
    (lambda c: c.set_model("m", b"x", "TORCH", batch_size=4, min_batch_timeout=5), ValueError),
    (lambda c: c.set_model_multigpu("m", b"x", "TORCH", -1, 1), ValueError),
    (lambda c: c.set_model_multigpu("m", b"x", "TORCH", 0, 0), ValueError),
    (lambda c: c.set_model_from_file("m", "/no/such/model.pt", "TORCH"), FileNotFoundError),
    (lambda c: c.get_db_node_info(["tcp://127.0.0.1:6379"]), error.RedisReplyError),
    (lambda c: c.get_db_node_info(["shard:1"]), error.RedisReplyError),
    (lambda c: c.config_set("maxmemory", "1gb", "shard:0"), error.RedisReplyError),  # no settings in-process
    (lambda c: c.flush_db(["shard:1"]), error.RedisReplyError),
    (lambda c: c.get_tensor("missing"), error.RedisKeyError),
    (lambda c: c.rename_tensor("missing", "x"), error.RedisReplyError),
])
def test_value_errors_and_reply_errors_as_smartredis(client: Client, call, exc):
    with pytest.raises(exc):
        call(client)


def test_flush_db_removes_every_key_of_the_shards(client: Client):
    client.put_tensor("t", np.zeros(3))
    ds = Dataset("d")
    ds.add_tensor("x", np.ones(2))
    client.put_dataset(ds)
    client.append_to_list("l", ds)
    client.flush_db(["shard:0"])
    assert not any(client.key_exists(k) for k in ("t", "d", "l"))
    assert client.get_db_node_info(["shard:0"])[0]["keys"] == 0


def test_min_batch_size_without_timeout_warns(client: Client):
    with pytest.warns(RuntimeWarning, match="min_batch_timeout"):
        with pytest.raises(error.RedisReplyError, match="runs no models"):  # this backend has no engine
            client.set_model("m", b"x", "TORCH", batch_size=4, min_batch_size=2)


# ---------------------------------------------------------------- constructors, SSDB, ConfigOptions

def test_constructor_forms(ssdb: str, tmp_path, monkeypatch: pytest.MonkeyPatch):
    assert Client().logger_name == "Default"
    assert Client(None, "named").logger_name == "named"
    assert Client(config_options=ConfigOptions.create_from_environment(""), logger_name="co").nshards == 1
    monkeypatch.delenv("SSDB")
    c = Client(False, ssdb, "addr")  # the address form sets SSDB, as in SmartRedis
    assert c.logger_name == "addr" and Client().backend == "inprocess"
    assert Client(cluster=True).backend == "inprocess"
    with pytest.raises(TypeError, match="unexpected keyword"):
        Client(False, ssdb, nonsense=1)
    with pytest.raises(TypeError):
        Client("not options")


def test_without_ssdb_the_client_cannot_connect(ssdb: str, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("SSDB")
    with pytest.raises(error.RedisConnectionError, match="SSDB not set"):
        Client()
    monkeypatch.setenv("SSDB", "127.0.0.1:6379")
    with pytest.raises(error.RedisConnectionError, match="not an mpistage connection file"):
        Client()
    monkeypatch.delenv("SSDB")
    monkeypatch.setenv("MPISTAGE_ADDRESS", ssdb)  # mpistage's own variable is the fallback
    assert Client().backend == "inprocess"


def test_config_options_with_a_suffix(ssdb: str, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("SSDB")
    monkeypatch.setenv("SSDB_ocean", ssdb)
    monkeypatch.setenv("SSKEYOUT_ocean", "member3")
    monkeypatch.setenv("SR_VALUE_ocean", "12")
    opts = ConfigOptions.create_from_environment("ocean")
    assert opts.get_integer_option("SR_VALUE") == 12 and opts.is_configured("SSDB")
    assert not opts.is_configured("SSKEYIN")
    with pytest.raises(error.RedisKeyError):
        opts.get_string_option("SSKEYIN")
    opts.override_integer_option("SR_VALUE", 5)
    opts.override_string_option("SSKEYIN", "member3")
    assert opts.get_integer_option("SR_VALUE") == 5
    with pytest.raises(TypeError):
        opts.override_integer_option("SR_VALUE", "5")
    c = Client(opts)
    c.put_tensor("u", np.ones(2))
    assert c.key_exists("member3.u") and c.tensor_exists("u")  # prefixes from the options
    with pytest.raises(error.RedisRuntimeError, match="factory"):
        ConfigOptions().get_string_option("SSDB")


# ---------------------------------------------------------------- errors, datasets, logging

def test_error_names_sit_in_mpistages_hierarchy():
    replies = [error.RedisRuntimeError, error.RedisBadAllocError, error.RedisDatabaseError,
               error.RedisInternalError, error.RedisTimeoutError, error.RedisKeyError]
    assert all(issubclass(e, error.RedisReplyError) for e in replies)
    assert all(issubclass(e, mpistage.MpistageError) for e in [*replies, error.RedisConnectionError])
    assert issubclass(mpistage.BadArgumentError, error.RedisReplyError)
    assert error.RedisKeyError is mpistage.KeyNotFoundError
    assert error.RedisConnectionError is mpistage.ServerUnreachableError
    assert issubclass(error.RedisReplyError, RuntimeError) and issubclass(error.RedisConnectionError, RuntimeError)
    assert issubclass(error.RedisTimeoutError, TimeoutError)
    # an unknown device or backend: SmartRedis's TypeError, and mpistage's BadArgumentError
    assert issubclass(mpistage.errors.UnknownChoiceError, TypeError)
    assert issubclass(mpistage.errors.UnknownChoiceError, mpistage.BadArgumentError)


def test_dataset_types_dims_strings_and_converter(client: Client):
    ds = Dataset("fields")
    ds.add_tensor("u", np.zeros((2, 3), np.float32))
    ds.add_meta_scalar("step", np.int32(4))
    ds.add_meta_scalar("dt", 0.5)
    ds.add_meta_scalar("count", np.uint32(2**32 - 1))
    ds.add_meta_scalar("big", np.uint64(2**64 - 1))
    ds.add_meta_string("units", "m/s")
    DatasetConverter.add_metadata_for_xarray(ds, "u", ["x", "y"], attr_names="units")
    client.put_dataset(ds)
    back = client.get_dataset("fields")
    assert isinstance(back, Dataset)
    assert back.get_tensor_type("u") is np.float32 and back.get_tensor_dims("u") == [2, 3]
    assert back.get_metadata_field_type("step") is np.int32 and back.get_metadata_field_type("units") is str
    assert back.get_metadata_field_type("count") is np.uint32 and back.get_metadata_field_type("big") is np.uint64
    assert back.get_meta_scalars("big").tolist() == [2**64 - 1]
    scalars, _ = unpack_metadata(pack_metadata(*back.metadata_arrays()))  # the wire codec keeps them
    assert scalars["count"].dtype == np.uint32 and scalars["big"].tolist() == [2**64 - 1]
    assert back.get_meta_strings("_xarray_u_dim_names") == ["x,y"]
    assert back.get_meta_strings("_xarray_u_coord_names") == ["null"]
    assert "u: float32 [2, 3]" in str(back) and "fields" in repr(back)
    assert Dtypes.tensor_from_numpy(np.zeros(1, np.int16)) == "INT16" and Dtypes.from_string("FLOAT") is np.float32
    with pytest.raises(error.RedisKeyError):
        back.get_tensor_type("missing")
    try:
        import xarray  # noqa: F401
    except ImportError:
        with pytest.raises(error.RedisRuntimeError, match="xarray"):
            DatasetConverter.transform_to_xarray(back)
    else:
        assert DatasetConverter.transform_to_xarray(back)["u"].dims == ("x", "y")


def test_logging_levels_file_and_objects(client: Client, tmp_path, monkeypatch: pytest.MonkeyPatch):
    log = tmp_path / "sr.log"
    monkeypatch.setenv("SR_LOG_FILE", str(log))
    monkeypatch.setenv("SR_LOG_LEVEL", "INFO")
    smartredis.log_data("ctx", smartredis.LLInfo, "shown")
    smartredis.log_data("ctx", smartredis.LLDebug, "hidden")
    client.log_warning(smartredis.LLInfo, "from the client")
    LogContext("lc").log_error(smartredis.LLQuiet, "from a context")
    Dataset("d").log_data(smartredis.LLInfo, "from a dataset")
    monkeypatch.setenv("SR_LOG_LEVEL", "QUIET")
    smartredis.log_data("ctx", smartredis.LLQuiet, "quiet")
    lines = log.read_text().splitlines()
    assert [re.sub(r"@[^:]*:[^:]*:[^:]*:", "@:", line) for line in lines] == [
        "ctx@:shown", "test@:WARNING: from the client", "lc@:ERROR: from a context", "d@:from a dataset"]
    with pytest.raises(TypeError):
        smartredis.log_data("ctx", 2, "an int is not a level")


def test_client_str_and_repr(client: Client):
    assert "Client (test)" in str(client) and "backend='inprocess'" in repr(client)


# ---------------------------------------------------------------- the docs table against the code

ROW = re.compile(r"\|\s*`(Client|Dataset|ConfigOptions|LogContext|DatasetConverter|module)\.(\w+)\((.*?)\)`"
                 r"\s*\|\s*(\w[\w /]*?)\s*\|")


def _doc_rows() -> list[tuple[str, str, str, str]]:
    rows = []
    for line in DOC.read_text().splitlines():
        m = ROW.match(line)
        if m:
            rows.append((m.group(1), m.group(2), m.group(3), m.group(4)))
    return rows


def test_every_name_marked_same_exists_with_smartredis_signature():
    rows = _doc_rows()
    assert len(rows) > 80
    owners = {"Client": Client, "Dataset": Dataset, "ConfigOptions": ConfigOptions, "LogContext": LogContext,
              "DatasetConverter": DatasetConverter, "module": smartredis}
    checked = 0
    for owner, name, params, status in rows:
        if status != "same":
            continue
        obj = getattr(owners[owner], name)
        wanted = [p.strip().split("=")[0] for p in params.split(",") if p.strip()]
        got = [p for p in inspect.signature(obj).parameters if p not in ("self", "cls")]
        assert got[:len(wanted)] == wanted, f"{owner}.{name}: {got} != {wanted}"
        checked += 1
    assert checked > 60


FORTRAN_ROW = re.compile(r"\|\s*`(client_type|dataset_type|configoptions_type|logcontext_type|smartredis_\w+)"
                         r"%(\w+)\(.*?\)`"
                         r"\s*\|\s*(\w[\w /]*?)\s*\|")


def test_every_fortran_call_marked_same_is_bound_in_the_library():
    sources = "\n".join(p.read_text().lower() for p in (DOC.parents[1] / "fortran" / "src").rglob("*")
                        if p.suffix in (".f90", ".inc"))
    bound = set(re.findall(r"(?:procedure|generic)\b[^:\n]*::\s*([^\n]+)", sources))
    names = {n.strip().split("=>")[0].strip() for line in bound for n in line.replace("&", "").split(",")}
    public = set(re.findall(r"(?:function|subroutine)\s+(\w+)", sources))
    rows = [FORTRAN_ROW.match(line) for line in DOC.read_text().splitlines()]
    same = [(m.group(1), m.group(2)) for m in rows if m and m.group(3) == "same"]
    assert len(same) > 60
    for owner, name in same:
        where = public if owner.startswith("smartredis_") else names
        assert name.lower() in where, f"{owner}%{name} is marked same but is not in fortran/src"


def test_the_documented_shim_leaves_import_smartredis_unchanged(ssdb: str, tmp_path):
    """docs/smartredis.md's shim package, taken from the page, under an unchanged SmartRedis import."""
    shim = re.search(r"cat > shim/smartredis/__init__.py <<'EOF'\n(.*?)\nEOF\n", DOC.read_text(), re.S)
    assert shim, "the shim is no longer in docs/smartredis.md"
    (tmp_path / "smartredis").mkdir()
    (tmp_path / "smartredis" / "__init__.py").write_text(shim.group(1) + "\n")
    program = ("import numpy as np\nimport smartredis\nfrom smartredis import Client\n"
               "from smartredis.error import RedisKeyError\n"
               "c = Client(None, logger_name='unchanged')\nc.put_tensor('x', np.arange(3))\n"
               "assert (c.get_tensor('x') == np.arange(3)).all()\n"
               "try:\n    c.get_tensor('missing')\n"
               "except RedisKeyError:\n    print('UNCHANGED OK', smartredis.__name__)\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "SSDB": ssdb}
    out = subprocess.run([sys.executable, "-c", program], env=env, capture_output=True, text=True, timeout=120)
    assert "UNCHANGED OK mpistage.smartredis" in out.stdout, out.stdout + out.stderr
