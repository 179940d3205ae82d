"""The launcher test's driver: a sweep of 3 Python (2 ranks each) and 2 Fortran members against 2
shards with key prefixes, a reader using set_data_source, a member that fails, one that calls
MPI_Abort, one that hangs past its timeout and one stopped with exp.stop(); prints one JSON line.

    python launcher_sweep.py --launcher spawn --exp-path DIR [--fortran EXE]
"""

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from mpistage.launcher import Experiment, MemberFailedError, Status

HERE = Path(__file__).resolve().parent
p = argparse.ArgumentParser()
p.add_argument("--launcher", default="auto")
p.add_argument("--exp-path", required=True)
p.add_argument("--fortran", default=None)
args = p.parse_args()
tag = f"--tag={args.exp_path}"
member = str(HERE / "launcher_member.py")
report: dict = {}

exp = Experiment("sweep", exp_path=args.exp_path, launcher=args.launcher)
report["launcher"] = exp.launcher
db = exp.create_database(db_nodes=2)
exp.generate(db)
exp.start(db)

rs = exp.create_run_settings(sys.executable, [member, tag])
rs.set_tasks(2)
py = exp.create_ensemble("py", params={"value": [1.5, 2.5, 3.5]}, run_settings=rs, params_as_args=["value"])
config = Path(args.exp_path).parent / "config.txt"
config.write_text("value is ;value; and ;unknown; stays\n")
py.attach_generator_files(to_configure=[str(config)])
py.enable_key_prefixing()
writers = [py]
expected = {m.name: m.params["value"] for m in py}
if args.fortran:
    ft = exp.create_ensemble("ft")
    for i, value in enumerate((10.0, 20.0)):
        frs = exp.create_run_settings(args.fortran, [str(value), tag])
        ft.add_model(exp.create_model(f"ft_{i}", frs, params={"value": value}))
    ft.enable_key_prefixing()
    writers.append(ft)
    expected.update({m.name: m.params["value"] for m in ft})

one = exp.create_run_settings(sys.executable, [member, tag])
bad = exp.create_model("bad", one.copy())
bad.run_settings.add_exe_args(["--mode", "fail"])
abort = exp.create_model("abort", one.copy())
abort.run_settings.add_exe_args(["--mode", "abort"])
hang = exp.create_model("hang", one.copy())
hang.run_settings.add_exe_args(["--mode", "hang"])
hang.run_settings.set_walltime("00:00:04")
stopme = exp.create_model("stopme", one.copy())
stopme.run_settings.add_exe_args(["--mode", "hang"])
exp.generate(*writers, bad, abort, hang, stopme, overwrite=True)

t0 = time.perf_counter()
futures = exp.start(*writers, bad, abort, hang, stopme, block=False)
report["start_seconds"] = time.perf_counter() - t0
done_calls = []
for f in futures:
    f.add_done_callback(lambda fut: done_calls.append(fut.name))
by_name = {f.name: f for f in futures}


def diagnose(name: str) -> str:
    """What a member that did not finish left behind: its output files and, where py-spy is on
    PATH, the stacks of its processes (a failure in CI then says where it stood)."""
    job = exp._jobs[name]
    parts = [f"--- {path.name}:\n{path.read_text(errors='replace')[-3000:]}" for path in (job.out, job.err)
             if path.exists()]
    spy = shutil.which("py-spy")
    if spy:
        pids = subprocess.run(["pgrep", "-f", args.exp_path], capture_output=True, text=True).stdout.split()
        for pid in pids:
            dump = subprocess.run([spy, "dump", "--native", "--pid", pid], capture_output=True, text=True, timeout=30)
            parts.append(f"--- py-spy {pid}:\n{dump.stdout}{dump.stderr}")
    return "\n".join(parts)


for name in expected:
    try:
        assert by_name[name].result(timeout=120) == 0, name
    except (TimeoutError, MemberFailedError) as exc:
        raise AssertionError(f"{exc}\n{diagnose(name)}") from None
time.sleep(1.0)
exp.stop(stopme)
try:
    by_name["bad"].result(timeout=60)
    raise AssertionError("a failing member reported success")
except MemberFailedError as exc:
    report["bad_error"] = str(exc)
exp.poll(interval=5, verbose=False)

reader = exp.create_model("reader", exp.create_run_settings(
    sys.executable, [str(HERE / "launcher_reader.py"), *(f"{k}={v}" for k, v in expected.items()), tag]))
for w in writers:
    reader.register_incoming_entity(w)
exp.generate(reader, overwrite=True)
exp.start(reader, block=True)

report["status"] = {m.name: s.value for e in (*writers, bad, abort, hang, stopme, reader)
                    for m, s in zip(e.models, exp.get_status(e), strict=True)}
report["finished"] = exp.finished(py)
report["callbacks"] = sorted(done_calls)
report["configured"] = (py.models[0].path / "config.txt").read_text()
report["outputs"] = {n: (Path(args.exp_path) / "py" / n / f"{n}.out").read_text() for n in ("py_0",)}
report["reader_out"] = (reader.path / "reader.out").read_text()
report["hang_reason"] = exp._jobs["hang"].reason
report["summary"] = exp.summary()
assert exp.get_status(db) == [Status.RUNNING]
t0 = time.perf_counter()
exp.close()
report["db_after_close"] = db.status.value
report["db_stop"] = {"seconds": time.perf_counter() - t0, "returncode": exp._db_job.returncode,
                     "reason": exp._db_job.reason}
print("REPORT " + json.dumps(report), flush=True)
