"""torch.export programs with backend TORCH (tests/scenarios/engine_export.py on a real server
rank), and the content check that tells the PyTorch formats apart (no MPI)."""

from __future__ import annotations

import io

import torch
from harness import run_mpmd

from mpistage.server.engine.torch_runtime import EXPORT, TORCHSCRIPT, archive_kind


class Twice(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * x


def test_formats_are_told_apart_by_content() -> None:
    program, script = io.BytesIO(), io.BytesIO()
    torch.export.save(torch.export.export(Twice(), (torch.ones(3, 2),)), program)
    torch.jit.save(torch.jit.script(Twice()), script)
    assert archive_kind(program.getvalue()) == EXPORT
    assert archive_kind(script.getvalue()) == TORCHSCRIPT
    assert archive_kind(b"not a zip") is None


def test_torch_export_programs_on_a_server() -> None:
    out = run_mpmd("engine_export.py", servers=1, clients=1, timeout=240).stdout
    assert "engine_export: all checks passed" in out, out
    for what in ("sends a torch.export program", "one request per run", "in order, arity checked",
                 "== preprocess_reference", "AOTInductor refused", "INFO: formats loaded"):
        assert what in out, (what, out)


def test_aoti_packages_need_the_opt_in() -> None:
    """An AOTInductor package (the layout: a .pt2 archive with data/aotinductor/) is refused by
    default; with --allow-aoti it reaches torch's AOTInductor loader, which here fails cleanly on a library that
    is not one (a real compiled package is not built in the tests: it takes minutes on 2 cores)."""
    import zipfile

    import pytest

    from mpistage.errors import BadArgumentError
    from mpistage.server.engine.runtime import RuntimeOptions
    from mpistage.server.engine.torch_runtime import AOTI, TorchRuntime

    program, package = io.BytesIO(), io.BytesIO()
    torch.export.save(torch.export.export(Twice(), (torch.ones(3, 2),)), program)
    with zipfile.ZipFile(io.BytesIO(program.getvalue())) as src, zipfile.ZipFile(package, "w") as dst:
        for item in src.namelist():
            dst.writestr(item, src.read(item))
        dst.writestr("archive/data/aotinductor/model/model.wrapper.so", b"\x7fELF not a library")
    data = package.getvalue()
    assert archive_kind(data) == AOTI
    with pytest.raises(BadArgumentError, match="refused .start the server with --allow-aoti"):
        TorchRuntime(RuntimeOptions()).load_model("m", data, "CPU", 0)
    with pytest.raises(BadArgumentError, match="AOTInductor package that does not load"):
        TorchRuntime(RuntimeOptions(allow_aoti=True)).load_model("m", data, "CPU", 0)
