"""Export models (TorchScript) and script sources for mpistage servers.

``python -m inference.export --out DIR`` writes ``eke_resnet.pt``, ``resnet50.pt``,
``eke_preprocess.txt`` and ``pre_process_3ch.txt`` into ``DIR``.
"""

from __future__ import annotations

import argparse
import io
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from inference.eke_features import EKE_PREPROCESS_SCRIPT
from inference.eke_resnet import EKEResNet, fuse_batchnorm
from inference.resnet50 import PRE_PROCESS_3CH_SCRIPT, resnet50

EKE_RESNET_FILE = "eke_resnet.pt"
RESNET50_FILE = "resnet50.pt"
EKE_PREPROCESS_FILE = "eke_preprocess.txt"
PRE_PROCESS_3CH_FILE = "pre_process_3ch.txt"


def to_torchscript(
    module: nn.Module, example_inputs: Tensor | tuple[Tensor, ...] | None = None
) -> torch.jit.ScriptModule:
    """Eval-mode TorchScript of ``module``: traced if ``example_inputs`` given, else scripted."""
    if isinstance(module, torch.jit.ScriptModule):
        return module.eval()
    module = module.eval()
    if example_inputs is None:
        return torch.jit.script(module)
    return torch.jit.trace(module, example_inputs)


def program_bytes(module: nn.Module, example_inputs: Tensor | tuple[Tensor, ...]) -> bytes:
    """A ``torch.export`` program of ``module`` (``.pt2`` bytes, ``torch.export.save``), dim 0 of
    every input dynamic (give examples with 2 or more rows). Backend TORCH serves it."""
    example = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    dims = tuple({0: torch.export.Dim.AUTO} for _ in example)
    program = torch.export.export(module.eval(), example, dynamic_shapes=dims)
    buf = io.BytesIO()
    torch.export.save(program, buf)
    return buf.getvalue()


def onnx_bytes(module: nn.Module, example_inputs: Tensor | tuple[Tensor, ...]) -> bytes:
    """A self-contained ONNX model of ``module`` (``torch.onnx.export``, the torch.export-based
    exporter), dim 0 of every input symbolic. Backend ONNX serves it."""
    example = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    dims = tuple({0: torch.export.Dim.AUTO} for _ in example)
    program = torch.onnx.export(module.eval(), example, dynamo=True, dynamic_shapes=dims, verbose=False)
    return program.model_proto.SerializeToString()


def torchscript_bytes(module: nn.Module, example_inputs: Tensor | tuple[Tensor, ...] | None = None) -> bytes:
    """Serialize ``module`` (scripted, or traced with ``example_inputs``) to bytes.

    Load on the server with ``torch.jit.load(io.BytesIO(data), map_location=device)``.
    """
    buf = io.BytesIO()
    torch.jit.save(to_torchscript(module, example_inputs), buf)
    return buf.getvalue()


def load_torchscript_bytes(data: bytes, map_location: str | torch.device | None = None) -> torch.jit.ScriptModule:
    """Inverse of :func:`torchscript_bytes` (``torch.jit.load``, never pickle)."""
    return torch.jit.load(io.BytesIO(data), map_location=map_location)


def compile_script(source: str) -> torch.jit.CompilationUnit:
    """Compile TorchScript source (e.g. :data:`EKE_PREPROCESS_SCRIPT`); call functions by name."""
    return torch.jit.CompilationUnit(source)


def export_eke_resnet(path: str | Path, seed: int = 0, model: EKEResNet | None = None, fuse: bool = True) -> Path:
    """Script and save an EKEResNet (``model``, else a random one from ``seed``).

    With ``fuse`` (default) BatchNorm is folded into the convolutions first
    (:func:`~inference.eke_resnet.fuse_batchnorm`): same outputs, ~2x faster on CPU.
    """
    if model is None:
        torch.manual_seed(seed)
        model = EKEResNet()
    model = fuse_batchnorm(model) if fuse else model.eval()
    return _save(to_torchscript(model), path)


def export_resnet50(path: str | Path, seed: int = 0) -> Path:
    """Script and save a random-weight ResNet-50."""
    return _save(to_torchscript(resnet50(seed=seed)), path)


def write_script(path: str | Path, source: str) -> Path:
    """Write TorchScript source text to ``path`` (checked to compile first)."""
    compile_script(source)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(source)
    return p


def export_all(out_dir: str | Path, seed: int = 0) -> dict[str, Path]:
    """Write all four artifacts into ``out_dir``; returns name -> path."""
    out = Path(out_dir)
    return {
        EKE_RESNET_FILE: export_eke_resnet(out / EKE_RESNET_FILE, seed),
        RESNET50_FILE: export_resnet50(out / RESNET50_FILE, seed),
        EKE_PREPROCESS_FILE: write_script(out / EKE_PREPROCESS_FILE, EKE_PREPROCESS_SCRIPT),
        PRE_PROCESS_3CH_FILE: write_script(out / PRE_PROCESS_3CH_FILE, PRE_PROCESS_3CH_SCRIPT),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: ``python -m inference.export --out DIR [--seed S]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="output directory")
    parser.add_argument("--seed", type=int, default=0, help="weight initialisation seed")
    args = parser.parse_args(argv)
    for path in export_all(args.out, args.seed).values():
        print(path)
    return 0


def _save(module: torch.jit.ScriptModule, path: str | Path) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.save(module, str(p))
    return p


if __name__ == "__main__":
    raise SystemExit(main())
