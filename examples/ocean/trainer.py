"""The online trainer: EKEResNet trained from the fine run's streamed snapshots, published to the servers.

``python examples/ocean/trainer.py --run-name fine --nranks N --snapshot-interval D --last-day LAST``
connects with ``mpistage.Client()`` (``MPISTAGE_ADDRESS``), waits for the snapshots of days
FIRST, FIRST + D, ... LAST of run ``fine`` (all N ranks' blocks; FIRST defaults to D), and trains a
round (``ocean.training``) each time ``--min-snapshots`` new ones have arrived and a final round after
LAST (``--rounds`` caps the rounds, the final one included). A round that improves the held-out
RMSE of ln EKE is published: model ``eke_resnet`` (fused TorchScript, the same name every round, so
the servers swap it while the coarse members call it), script ``eke_preprocess`` and the tensors
``eke_means``, ``eke_stds`` (fixed after the first round: the script and the statistics are
set with the first published network, later rounds set only the model).

It prints one line per round (flushed), and writes into ``--out``: ``training.json`` (rewritten after
each round), ``eke_resnet.pt`` (the network last published) and ``truth_f<r>.npy`` (time-mean
coarse-grained EKE of the snapshots seen, ``ocean.truth``). Exits 0 after the final round; 2 when a
snapshot does not come within ``--timeout`` seconds.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ocean.setup_network import MEANS_KEY, MODEL_NAME, SCRIPT_NAME, STDS_KEY, publish  # noqa: E402
from ocean.snapshots import SnapshotSource  # noqa: E402
from ocean.training import EPOCH_SAMPLES, SHORT_SCHEDULE, OnlineTrainer, RoundResult  # noqa: E402
from ocean.truth import TruthAccumulator  # noqa: E402

MODEL_FILE = "eke_resnet.pt"
TRAINING_FILE = "training.json"


def snapshot_days(interval: int, last: int, first: int | None = None) -> list[int]:
    """The days a fine run streaming every ``interval`` days puts from ``first`` (default ``interval``) to
    ``last``. Raises ValueError unless both are positive multiples of ``interval`` with first <= last."""
    first = interval if first is None else first
    if interval < 1 or first < 1 or first % interval or last % interval or last < first:
        raise ValueError(f"snapshot days: first {first} and last {last} must be positive multiples of the "
                         f"interval {interval}, first <= last")
    return list(range(first, last + 1, interval))


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename (readers never see half a file)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def round_line(r: RoundResult, day: int) -> str:
    """The progress line of a round."""
    def num(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.4f}"

    return (f"trainer: round {r.round} day {day} snapshots {r.snapshots} samples {r.samples} "
            f"train_loss {r.train_loss:.4f} heldout_rmse_ln_eke {num(r.heldout_rmse_ln_eke)} "
            f"(quadratic {num(r.heldout_rmse_quadratic_baseline)}) published {'yes' if r.published else 'no'} "
            f"seconds {r.seconds:.1f}")


def summary(args: argparse.Namespace, trainer: OnlineTrainer, days: list[int],
            records: list[dict[str, Any]]) -> dict[str, Any]:
    """The content of training.json."""
    return {
        "run_name": args.run_name, "nranks": args.nranks, "factors": trainer.factors,
        "snapshot_interval": args.snapshot_interval, "first_day": days[0], "last_day": days[-1],
        "days_train": trainer.days_train, "days_heldout": trainer.days_heldout,
        "schedule": {**dataclasses.asdict(trainer.config), "epoch_samples": trainer.epoch_samples,
                     "seed": trainer.seed},
        "statistics": {"means": trainer.means.tolist(), "stds": trainer.stds.tolist(),
                       "fitted": "round 1 training samples, fixed afterwards"},
        "published_names": {"model": MODEL_NAME, "script": SCRIPT_NAME, "means": MEANS_KEY, "stds": STDS_KEY},
        "best_heldout_rmse_ln_eke": trainer.best_rmse,
        "rounds": records,
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run-name", default="fine", help="&coupling run_name of the fine run")
    p.add_argument("--nranks", type=int, required=True, help="ranks of the fine run (blocks per snapshot)")
    p.add_argument("--factors", type=int, nargs="+", default=[4, 8], help="coarse-graining factors, pooled")
    p.add_argument("--snapshot-interval", type=int, required=True, help="days between snapshots (D)")
    p.add_argument("--first-day", type=int, help="first snapshot day (default D; a restarted run's first)")
    p.add_argument("--last-day", type=int, required=True, help="last snapshot day")
    p.add_argument("--rounds", type=int, help="most rounds, the final one included (default: no cap)")
    p.add_argument("--epochs", type=int, default=SHORT_SCHEDULE.epochs, help="epochs per round")
    p.add_argument("--epoch-samples", type=int, default=EPOCH_SAMPLES, help="most samples drawn per epoch")
    p.add_argument("--min-snapshots", type=int, default=10, help="new snapshots that start a round")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds to wait for one snapshot")
    p.add_argument("--out", type=Path, default=Path("."), help="directory for training.json and the files")
    args = p.parse_args(argv)
    if args.rounds is not None and args.rounds < 1:
        p.error("--rounds must be at least 1")
    if args.min_snapshots < 1 or args.epochs < 1 or args.nranks < 1:
        p.error("--min-snapshots, --epochs and --nranks must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Wait for the snapshots, train, publish; see the module docstring."""
    args = parse_args(argv)
    try:
        days = snapshot_days(args.snapshot_interval, args.last_day, args.first_day)
    except ValueError as exc:
        print(f"trainer: {exc}", file=sys.stderr)
        return 2
    import torch

    from mpistage import Client

    torch.set_num_threads(1)
    import torch._dynamo  # noqa: F401  (the first SGD optimizer imports it: seconds, paid here, not in round 1)
    args.out.mkdir(parents=True, exist_ok=True)
    client = Client()
    client.use_tensor_ensemble_prefix(False)
    source = SnapshotSource(client, args.run_name, args.nranks)
    trainer = OnlineTrainer(args.factors, epoch_samples=args.epoch_samples, seed=args.seed)
    truth = TruthAccumulator(args.factors)
    records: list[dict[str, Any]] = []
    print(f"trainer: waiting for {len(days)} snapshots of run {args.run_name!r} (days {days[0]}..{days[-1]} "
          f"every {args.snapshot_interval}, {args.nranks} ranks), factors {args.factors}", flush=True)
    fresh, published_once = 0, False
    for day in days:
        try:
            source.wait(day, args.timeout)
        except TimeoutError as exc:
            print(f"trainer: {exc}", file=sys.stderr, flush=True)
            return 2
        snap = source.read(day)
        trainer.add(snap)
        truth.add(snap)
        fresh += 1
        final = day == days[-1]
        room = args.rounds is None or len(trainer.rounds) < args.rounds - 1
        if not final and (fresh < args.min_snapshots or not room):
            continue
        result = trainer.train_round(args.epochs)
        t0 = time.monotonic()
        if result.published and not published_once:  # the script and the fixed statistics go once
            publish(trainer.means, trainer.stds, model=trainer.best_model, client=client)
            published_once = True
        elif result.published:
            client.set_model(MODEL_NAME, trainer.best_model)
        if result.published:
            write_atomic(args.out / MODEL_FILE, trainer.best_model)
        publish_seconds = time.monotonic() - t0
        result.seconds += publish_seconds
        fresh = 0
        records.append({**result.as_dict(), "day": day, "publish_seconds": publish_seconds})
        write_atomic(args.out / TRAINING_FILE, json.dumps(summary(args, trainer, days, records), indent=1).encode())
        truth.save(args.out)
        print(f"{round_line(result, day)} (cpu {result.cpu_seconds:.1f}, publish {publish_seconds:.1f})", flush=True)
    print(f"trainer: done, {len(trainer.rounds)} rounds, best held-out RMSE of ln EKE "
          f"{trainer.best_rmse if trainer.best_rmse is None else round(trainer.best_rmse, 4)}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
