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
