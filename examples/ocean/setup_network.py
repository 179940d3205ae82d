"""Publish EKEResNet, the preprocessing script and the feature statistics on running mpistage servers.

``MPISTAGE_ADDRESS=run/address python examples/ocean/setup_network.py --state year5.bin --factor 4``
standardizes with the features of the interior coarse cells of ``--state`` (a fine state file)
coarse-grained by ``--factor`` and publishes an EKEResNet (untrained, from ``--seed``, unless
``--model`` names a TorchScript file) under the names the model's namelist expects by default.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ocean import features, state  # noqa: E402


def feature_statistics(state_file: Path, factor: int) -> tuple[np.ndarray, np.ndarray]:
    """float32 means and stds of the log-transformed features of ``state_file`` at ``factor``."""
    from inference.eke_features import fit_standardization

    s = state.read_state(state_file)
    x, _ = features.training_samples(s.u, s.v, s.h, factor, features.Basin())
    x[:, 0] = np.maximum(x[:, 0], 1e-20)
    x[:, 2] = np.maximum(x[:, 2], 1e-20)
    means, stds = fit_standardization(x)
    return means.astype(np.float32), stds.astype(np.float32)


def publish(means: np.ndarray, stds: np.ndarray, model_file: Path | None = None, seed: int = 0,
            model_name: str = "eke_resnet", script_name: str = "eke_preprocess",
            means_key: str = "eke_means", stds_key: str = "eke_stds") -> None:
    """Connect (``MPISTAGE_ADDRESS``) and set the model, the script and the two statistics tensors."""
    import io

    import torch

    from inference.eke_features import EKE_PREPROCESS_SCRIPT
    from inference.eke_resnet import EKEResNet, fuse_batchnorm
    from mpistage import Client

    if model_file is None:
        torch.manual_seed(seed)
        buf = io.BytesIO()
        torch.jit.save(torch.jit.script(fuse_batchnorm(EKEResNet())), buf)
        model = buf.getvalue()
    else:
        model = Path(model_file).read_bytes()
    client = Client()
    client.set_model(model_name, model)
    client.set_script(script_name, EKE_PREPROCESS_SCRIPT)
    client.put_tensor(means_key, np.ascontiguousarray(means, dtype=np.float32))
    client.put_tensor(stds_key, np.ascontiguousarray(stds, dtype=np.float32))


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--state", type=Path, required=True, help="fine state file for the feature statistics")
    p.add_argument("--factor", type=int, default=4, help="coarse-graining factor of the statistics")
    p.add_argument("--model", type=Path, help="TorchScript file of a trained EKEResNet")
    p.add_argument("--seed", type=int, default=0, help="seed of the untrained network")
    args = p.parse_args(argv)
    means, stds = feature_statistics(args.state, args.factor)
    publish(means, stds, args.model, args.seed)
    print(f"published model, script and statistics (means {np.round(means, 3)}, stds {np.round(stds, 3)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
