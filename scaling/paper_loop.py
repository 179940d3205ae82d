"""The paper's synthetic benchmark loop (Partee et al., Listing 1) as a Python client program.

Per rank and iteration: ``put_tensor`` a 224x224x3 float32 image, ``run_script`` the
``pre_process_3ch`` script on it, ``run_model`` ResNet-50 on the result, ``unpack_tensor`` the
1x1000 output; each call timed with ``MPI_Wtime``, one ``MPI_Barrier`` at the start only, 100
iterations by default. ``--workload eke`` is the ocean example's call instead: 3,000 points of 4
features through the EKE preprocessing script and EKEResNet, unpacking 3,000x1.

    mpistage launch --servers 2 -n 4 -- python scaling/paper_loop.py --setup MODELS --out DIR
    python scaling/paper_loop.py --help

``--setup MODELS`` (a directory written by ``python -m inference.export``): rank 0 stores the
model (with ``--batch-size``) and the script before the barrier, as the paper's driver did
before starting its clients. ``--total N`` is strong scaling (N iterations shared by the ranks);
otherwise each rank runs ``--iterations`` (weak scaling). Each rank writes ``DIR/rank<r>.csv``
with the columns ``rank,iteration,call,seconds`` (calls: put, script, model, unpack, iteration).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

CALLS = ("put", "script", "model", "unpack")
#: workload -> (model file, script file, script function, input shape, output shape). The names are
#: inference.export's and inference's (tests/test_scaling.py checks that they agree); they are not
#: imported from there because that imports torch, which a client does not need (and which took
#: most of a client's start-up time on these cores).
WORKLOADS = {
    "resnet": ("resnet50.pt", "pre_process_3ch.txt", "pre_process_3ch", (224, 224, 3), (1, 1000)),
    "eke": ("eke_resnet.pt", "eke_preprocess.txt", "preprocess", (3000, 4), (3000, 1)),
}
MODEL_NAME, SCRIPT_NAME = "paper_model", "paper_script"
EKE_MEANS, EKE_STDS = "paper_eke_means", "paper_eke_stds"


def rank_iterations(rank: int, size: int, iterations: int, total: int | None) -> int:
    """Iterations for ``rank``: ``iterations`` (weak scaling), or its share of ``total`` (strong)."""
    if total is None:
        return iterations
    return total // size + (1 if rank < total % size else 0)


def setup_store(client, models: Path, workload: str, batch_size: int) -> None:
    """Store the workload's model and script (and the EKE standardization tensors)."""
    model_file, script_file, *_ = WORKLOADS[workload]
    client.set_model_from_file(MODEL_NAME, models / model_file, "TORCH", "CPU", batch_size=batch_size)
    client.set_script_from_file(SCRIPT_NAME, models / script_file)
    if workload == "eke":  # the ocean example's standardization, here the identity
        client.put_tensor(EKE_MEANS, np.zeros(4, np.float32))
        client.put_tensor(EKE_STDS, np.ones(4, np.float32))


def eke_features(n: int, rng: np.random.Generator) -> np.ndarray:
    """Raw features with the signs the EKE preprocessing expects (columns 0 and 2 positive)."""
    f = rng.standard_normal((n, 4)).astype(np.float32)
    f[:, [0, 2]] = np.abs(f[:, [0, 2]]) + 1e-3
    return f


def run_loop(client, wtime, rank: int, iterations: int, workload: str) -> list[tuple[int, int, str, float]]:
    """The timed loop; one record per call and iteration: (rank, iteration, call, seconds)."""
    *_, fn, in_shape, out_shape = WORKLOADS[workload]
    rng = np.random.default_rng(rank)
    array = rng.random(in_shape, dtype=np.float32) if workload == "resnet" else eke_features(in_shape[0], rng)
    result = np.empty(out_shape, np.float32)
    records = []
    for i in range(iterations):
        in_key = f"resnet_input_rank_{rank}_{i}"
        script_out_key = f"resnet_processed_input_rank_{rank}_{i}"
        out_key = f"resnet_output_rank_{rank}_{i}"
        inputs = [in_key] if workload == "resnet" else [in_key, EKE_MEANS, EKE_STDS]
        t_start = t0 = wtime()
        client.put_tensor(in_key, array)
        t1 = wtime()
        client.run_script(SCRIPT_NAME, fn, inputs, [script_out_key])
        t2 = wtime()
        client.run_model(MODEL_NAME, [script_out_key], [out_key])
        t3 = wtime()
        client.unpack_tensor(out_key, result)
        t4 = wtime()
        for call, seconds in zip(CALLS, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
            records.append((rank, i, call, seconds))
        records.append((rank, i, "iteration", t4 - t_start))
    if iterations and not np.isfinite(result).all():
        raise SystemExit(f"paper_loop: rank {rank}: the model's output is not finite")
    return records


def write_records(path: Path, records: list[tuple[int, int, str, float]]) -> None:
    """``rank,iteration,call,seconds`` CSV."""
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(("rank", "iteration", "call", "seconds"))
        w.writerows((r, i, c, f"{s:.9f}") for r, i, c, s in records)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workload", choices=sorted(WORKLOADS), default="resnet")
    p.add_argument("--iterations", type=int, default=100, help="per rank (weak scaling)")
    p.add_argument("--total", type=int, help="total iterations over all ranks (strong scaling)")
    p.add_argument("--setup", type=Path, help="directory of exported models: rank 0 stores model and script")
    p.add_argument("--batch-size", type=int, default=10000, help="the model's batch_size (the paper's 10,000)")
    p.add_argument("--out", type=Path, required=True, help="directory for rank<r>.csv")
    args = p.parse_args(argv)
    if args.iterations < 0 or (args.total is not None and args.total < 0):
        p.error("iteration counts must not be negative")

    import mpistage
    from mpistage.mpienv import mpi

    MPI = mpi()
    client = mpistage.Client(logger_name="paper_loop")
    comm = mpistage.app_comm()
    rank, size = comm.Get_rank(), comm.Get_size()
    if rank == 0 and args.setup is not None:
        setup_store(client, args.setup, args.workload, args.batch_size)
    comm.Barrier()  # the only synchronization: every rank starts together
    records = run_loop(client, MPI.Wtime, rank,
                       rank_iterations(rank, size, args.iterations, args.total), args.workload)
    args.out.mkdir(parents=True, exist_ok=True)
    write_records(args.out / f"rank{rank}.csv", records)


if __name__ == "__main__":
    main()
