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
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ocean import features, state  # noqa: E402

#: the names the model's namelist defaults expect (``&coupling model_name, script_name, stats_key``)
MODEL_NAME, SCRIPT_NAME, MEANS_KEY, STDS_KEY = "eke_resnet", "eke_preprocess", "eke_means", "eke_stds"


def statistics(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float32 means and stds of the log-transformed raw features (N, 4), floored as the model floors them."""
    from inference.eke_features import fit_standardization

    means, stds = fit_standardization(features.floored(raw))
    return means.astype(np.float32), stds.astype(np.float32)


def feature_statistics(state_file: Path, factor: int) -> tuple[np.ndarray, np.ndarray]:
    """float32 means and stds of the log-transformed features of ``state_file`` at ``factor``."""
    s = state.read_state(state_file)
    x, _ = features.training_samples(s.u, s.v, s.h, factor, features.Basin())
    return statistics(x)


def publish(means: np.ndarray, stds: np.ndarray, model_file: Path | None = None, seed: int = 0,
            model_name: str = MODEL_NAME, script_name: str = SCRIPT_NAME,
            means_key: str = MEANS_KEY, stds_key: str = STDS_KEY, model: bytes | None = None,
            client: Any = None) -> None:
    """Set the model, the script and the two statistics tensors on the servers.

    The model is ``model`` (TorchScript bytes), else ``model_file``, else an untrained EKEResNet from
    ``seed``. ``client`` is a connected ``mpistage.Client``; by default one is made (``MPISTAGE_ADDRESS``).
    """
    import io

    import torch

    from inference.eke_features import EKE_PREPROCESS_SCRIPT
    from inference.eke_resnet import EKEResNet, fuse_batchnorm
    from mpistage import Client

    if model is None and model_file is None:
        torch.manual_seed(seed)
        buf = io.BytesIO()
        torch.jit.save(torch.jit.script(fuse_batchnorm(EKEResNet())), buf)
        model = buf.getvalue()
    elif model is None:
        model = Path(model_file).read_bytes()
    client = client if client is not None else Client()
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
