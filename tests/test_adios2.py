"""The ADIOS2 backend over real BP5 files, in this process: Client calls, steps, layout,
interop both ways with stock ``adios2`` (FileReader, Stream), and the errors for what does not map."""

from __future__ import annotations

import numpy as np
import pytest

adios2 = pytest.importorskip("adios2")

from mpistage import Client, Dataset  # noqa: E402
from mpistage.backends.adios2_config import Adios2Options, adios2_backend, write_options  # noqa: E402
from mpistage.backends.adios2_store import EndOfStreamError, StepTimeoutError  # noqa: E402
from mpistage.errors import BadArgumentError, KeyNotFoundError, ServerUnreachableError  # noqa: E402


def writer(path, **kw) -> Client:
    return Client(backend=adios2_backend("BP5", str(path), "writer", **kw))


def reader(path, timeout_s: float = 5.0) -> Client:
    return Client(backend=adios2_backend("BP5", str(path), "reader", timeout_s=timeout_s))


def close(client: Client) -> None:
    client.shutdown_servers()  # the adios2 backend closes its engine


def make_dataset(step: int) -> Dataset:
    ds = Dataset(f"obs{step}")
    ds.add_tensor("t", np.full((2, 2), step, np.float32))
    ds.add_tensor("i", np.arange(3, dtype=np.int64))
    ds.add_meta_scalar("dt", 0.25)
    ds.add_meta_scalar("dt", 0.5)
    ds.add_meta_string("units", "m/s")
    ds.add_meta_string("tags", "a")
    ds.add_meta_string("tags", "b c")
    return ds


def test_tensors_datasets_and_steps_round_trip(tmp_path):
    path = tmp_path / "run.bp"
    w = writer(path)
    assert w.backend == "adios2"
    u = np.arange(12, dtype=np.float64).reshape(3, 4)
    f = np.asfortranarray(np.arange(20, dtype=np.int32).reshape(4, 5))
    for step in range(3):
        w.put_tensor("u", u + step)
        w.put_tensor("f", f * step)
        w.put_tensor("scalar", np.array(step, np.int16))
        w.put_tensor("big_endian", np.arange(4, dtype=">u2"))
        w.put_dataset(make_dataset(step))
        w.flush()
    close(w)

    r = reader(path)
    for step in range(3):
        np.testing.assert_array_equal(r.get_tensor("u"), u + step)
        got = r.get_tensor("f")
        assert got.flags.f_contiguous and not got.flags.c_contiguous
        np.testing.assert_array_equal(got, f * step)
        out = np.empty((4, 5), np.int32, order="F")
        r.unpack_tensor("f", out)
        np.testing.assert_array_equal(out, f * step)
        assert r.get_tensor("scalar").shape == () and r.get_tensor("scalar") == step
        np.testing.assert_array_equal(r.get_tensor("big_endian"), np.arange(4))
        assert r.tensor_exists("u") and not r.tensor_exists("v")
        assert r.dataset_exists(f"obs{step}") and not r.dataset_exists("nothing")
        ds = r.get_dataset(f"obs{step}")
        assert ds.get_tensor_names() == ["t", "i"]
        np.testing.assert_array_equal(ds.get_tensor("t"), np.full((2, 2), step, np.float32))
        np.testing.assert_array_equal(ds.get_meta_scalars("dt"), [0.25, 0.5])
        assert ds.get_meta_strings("units") == ["m/s"] and ds.get_meta_strings("tags") == ["a", "b c"]
        with pytest.raises(KeyNotFoundError, match="not in step"):
            r.get_tensor("v")
        with pytest.raises(BadArgumentError, match="is f"):
            r.unpack_tensor("u", np.empty((3, 4), np.float32))
        r.flush()
    with pytest.raises(EndOfStreamError, match="closed"):
        r.get_tensor("u")
    info = r.get_server_info()[0]
    assert info["engine"] == "BP5" and info["steps_done"] == 3 and info["steps_missed"] == 0
    close(r)


def test_stock_file_reader_sees_names_shapes_dtypes_attributes(tmp_path):
    path = tmp_path / "stock.bp"
    w = writer(path, dimensions={"temp": ("y", "x")})
    temp = np.random.default_rng(0).random((3, 5)).astype(np.float32)
    f = np.asfortranarray(np.arange(6, dtype=np.int64).reshape(2, 3))
    with w._store.step():
        w.put_tensor("temp", temp)
        w.put_tensor("sim.f", f)
        w.put_dataset(make_dataset(7))
    close(w)
    with adios2.FileReader(str(path)) as fr:
        variables = fr.available_variables()
        assert set(variables) == {"temp", "sim.f", "obs7/t", "obs7/i"}
        assert variables["temp"]["Type"] == "float" and variables["temp"]["Shape"] == "3, 5"
        assert variables["sim.f"]["Type"] == "int64_t" and variables["sim.f"]["Shape"] == "2, 3"
        np.testing.assert_array_equal(fr.read("temp"), temp)
        np.testing.assert_array_equal(fr.read("sim.f"), f)  # the logical array, in C order
        np.testing.assert_array_equal(fr.read("obs7/t"), np.full((2, 2), 7, np.float32))
        assert fr.read_attribute_string("temp/dimensions") == "y x"
        assert fr.read_attribute_string("sim.f/dimensions") == "sim.f_dim0 sim.f_dim1"
        assert fr.read_attribute_string("obs7/t/dimensions") == "obs7_t_dim0 obs7_t_dim1"
        assert fr.read_attribute_string("sim.f/mpistage.order") == "F"
        np.testing.assert_array_equal(fr.read_attribute("obs7/dt"), [0.25, 0.5])
        assert fr.read_attribute_string("obs7/mpistage.tensors") == '["t", "i"]'
        assert fr.read_attribute_string("obs7/units") == "m/s"


def test_client_reads_a_file_stock_adios2_wrote(tmp_path):
    path = str(tmp_path / "native.bp")
    rho = np.linspace(0, 1, 24).reshape(2, 3, 4)
    with adios2.Stream(path, "w") as s:
        for step in range(2):
            s.begin_step()
            s.write("rho", rho + step)
            s.write("count", step)  # a single value
            s.write("mesh/x", np.arange(4, dtype=np.float32))
            s.write("mesh/y", np.arange(3, dtype=np.uint8))
            if step == 0:
                s.write_attribute("mesh/name", "cartesian")
                s.write_attribute("mesh/spacing", np.array([0.1, 0.2]))
            s.end_step()
    r = reader(path)
    for step in range(2):
        got = r.get_tensor("rho")
        assert got.dtype == np.float64 and got.shape == (2, 3, 4) and got.flags.c_contiguous
        np.testing.assert_array_equal(got, rho + step)
        assert r.get_tensor("count") == step
        mesh = r.get_dataset("mesh")
        assert mesh.get_tensor_names() == ["x", "y"]  # no list attribute: the variables in name order
        np.testing.assert_array_equal(mesh.get_tensor("y"), np.arange(3, dtype=np.uint8))
        assert mesh.get_meta_strings("name") == ["cartesian"]
        np.testing.assert_array_equal(mesh.get_meta_scalars("spacing"), [0.1, 0.2])
        r.flush()
    close(r)


def test_what_does_not_map_names_the_mpi_backend(tmp_path):
    w = writer(tmp_path / "x.bp")
    w.put_tensor("a", np.zeros(2))
    for call in (lambda: w.set_model("m", b"bytes"), lambda: w.run_model("m", ["a"], ["b"]),
                 lambda: w.set_script("s", "def f(x): return x"), lambda: w.delete_tensor("a"),
                 lambda: w.copy_tensor("a", "b"), lambda: w.append_to_list("l", Dataset("d")),
                 lambda: w.get_list_length("l"), lambda: w.save()):
        with pytest.raises(BadArgumentError, match="MPI backend"):
            call()
    with pytest.raises(BadArgumentError, match="reader"):
        w.get_tensor("a")
    with pytest.raises(BadArgumentError, match="already put in this step"):
        w.put_tensor("a", np.ones(2))
    with pytest.raises(TypeError, match="not supported"):
        w.put_tensor("c", np.zeros(2, np.complex64))
    w.flush()
    with pytest.raises(BadArgumentError, match="keep their type and rank"):
        w.put_tensor("a", np.zeros(2, np.float32))
    w.put_dataset(make_dataset(1))
    w.flush()
    changed = make_dataset(1)
    changed.add_meta_string("units", "km/h")
    with pytest.raises(BadArgumentError, match="cannot change"):
        w.put_dataset(changed)
    close(w)
    with pytest.raises(ServerUnreachableError, match="closed"):
        w.put_tensor("a", np.zeros(2))
    r = reader(tmp_path / "x.bp")
    with pytest.raises(BadArgumentError, match="writer"):
        r.put_tensor("a", np.zeros(2))
    close(r)


def test_connection_file_names_the_backend(tmp_path, monkeypatch):
    address = tmp_path / "adios2.json"
    write_options(address, Adios2Options("BP5", "coupled.bp", "writer"))  # relative to the file
    w = Client(address=str(address))
    assert w.backend == "adios2"
    w.put_tensor("x", np.arange(3.0))
    close(w)
    assert (tmp_path / "coupled.bp").is_dir()
    write_options(address, Adios2Options("BP5", "coupled.bp", "reader", timeout_s=3))
    monkeypatch.setenv("MPISTAGE_ADDRESS", str(address))
    r = Client(backend="adios2")
    np.testing.assert_array_equal(r.get_tensor("x"), np.arange(3.0))
    close(r)
    monkeypatch.delenv("MPISTAGE_ADDRESS")
    with pytest.raises(BadArgumentError, match="connection file"):
        Client(backend="adios2")
    with pytest.raises(BadArgumentError, match="engine"):
        adios2_backend("HDF5", "x", "writer")


def test_reader_times_out_on_a_step_that_does_not_come_and_on_no_writer(tmp_path):
    path = str(tmp_path / "live.bp")
    w = writer(path)
    w.put_tensor("a", np.zeros(3))
    w.flush()
    r = reader(path, timeout_s=1)
    np.testing.assert_array_equal(r.get_tensor("a"), np.zeros(3))
    r.flush()
    with pytest.raises(StepTimeoutError, match="within 1"):
        r.get_tensor("a")  # the writer is open but has not ended a second step
    w.put_tensor("a", np.ones(3))
    w.flush()
    np.testing.assert_array_equal(r.get_tensor("a"), np.ones(3))  # the stream goes on after a timeout
    close(w)
    close(r)
    with pytest.raises(ServerUnreachableError, match="no writer appeared"):
        reader(tmp_path / "never.bp", timeout_s=1)
