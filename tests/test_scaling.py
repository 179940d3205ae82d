"""Scaling studies (scaling/): the sweep's smallest configuration end to end, the performance
model on recorded data, and the virtual hosts made and removed."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest
from harness import PYTHON, ROOT, run

sys.path.insert(0, str(ROOT / "scaling"))

import netns  # noqa: E402
import perf_model  # noqa: E402
import sweep  # noqa: E402

#: the committed result set the model is checked on (docs/scaling.md shows it)
RECORDED = ROOT / "scaling" / "results" / "2026-12-02"


def test_smallest_configuration_end_to_end(tmp_path: Path) -> None:
    """One shard, one client, two EKE iterations, MPMD: records for every call, and a summary."""
    out = tmp_path / "res"
    run([PYTHON, ROOT / "scaling" / "sweep.py", "--workloads", "eke", "--shards", "1", "--clients", "1",
         "--iterations", "2", "--timeout", "150", "--no-report", "--out", out], timeout=200)
    with (out / "records.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert sorted({r["call"] for r in rows}) == sorted(sweep.CALLS)
    assert len(rows) == 2 * len(sweep.CALLS)
    assert {(r["mode"], r["shards"], r["clients"], r["workload"]) for r in rows} == {("mpmd", "1", "1", "eke")}
    assert all(float(r["seconds"]) > 0 for r in rows)
    per_iteration = {}
    for r in rows:
        per_iteration.setdefault(r["iteration"], {})[r["call"]] = float(r["seconds"])
    for calls in per_iteration.values():  # the loop's time holds its four calls
        assert calls["iteration"] >= sum(calls[c] for c in perf_model.CALLS) * 0.999
    (summary,) = json.loads((out / "summary.json").read_text())
    assert summary["ok"] and summary["ranks_reporting"] == 1 and summary["throughput_it_per_s"] > 0
    assert json.loads((out / "run.json").read_text())["configs"][0]["workload"] == "eke"


def test_workload_names_match_inference() -> None:
    """paper_loop names the exported files and script functions without importing torch."""
    from paper_loop import WORKLOADS

    from inference.eke_features import EKE_PREPROCESS_FUNCTION
    from inference.export import EKE_PREPROCESS_FILE, EKE_RESNET_FILE, PRE_PROCESS_3CH_FILE, RESNET50_FILE
    from inference.resnet50 import PRE_PROCESS_3CH_FUNCTION

    assert WORKLOADS["resnet"][:3] == (RESNET50_FILE, PRE_PROCESS_3CH_FILE, PRE_PROCESS_3CH_FUNCTION)
    assert WORKLOADS["eke"][:3] == (EKE_RESNET_FILE, EKE_PREPROCESS_FILE, EKE_PREPROCESS_FUNCTION)


def test_mva_properties() -> None:
    """One client sees bare service times; processor sharing (the paper's nodes) saturated: each
    call's mean grows as clients/nodes x its own service time; FCFS (this machine's engine): a
    script waits behind the models ahead of it; batching raises throughput."""
    st = perf_model.ServiceTimes(put=0.25e-3, script=1e-3, model=0.5e-3, unpack=0.05e-3)
    for discipline in ("ps", "fcfs"):
        one = perf_model.mva(st, 1, 4, discipline=discipline)
        assert one["calls"]["script"]["mean"] == pytest.approx(1e-3)
        assert one["calls"]["iteration"]["mean"] == pytest.approx(1.8e-3)
    a, b = perf_model.mva(st, 1800, 4, discipline="ps"), perf_model.mva(st, 3600, 4, discipline="ps")
    assert b["calls"]["script"]["mean"] / a["calls"]["script"]["mean"] == pytest.approx(2, rel=0.01)
    for c, slope in (("put", 0.25e-3), ("script", 1e-3), ("model", 0.5e-3)):
        assert a["calls"][c]["mean"] == pytest.approx(1800 / 4 * slope, rel=0.01)
    eng = perf_model.ServiceTimes(put=0.01, script=0.05, model=1.0, unpack=0.001)
    f = perf_model.mva(eng, 4, 1, discipline="fcfs")
    assert f["calls"]["script"]["mean"] > 10 * eng.script  # behind the models
    assert f["calls"]["put"]["mean"] < 0.1  # the request loop is not behind the engine
    for r in (a, f):
        for c in perf_model.CALLS:
            assert r["calls"][c]["mean"] <= r["calls"][c]["max"] * 1.0001
            assert r["calls"][c]["p99"] <= r["calls"][c]["max"] * 1.0001
    batched = perf_model.ServiceTimes(0.01, 0.05, 1.0, 0.001, batch_time={2: 1.2, 4: 1.6})
    assert perf_model.mva(batched, 4, 1, 10000)["throughput_it_per_s"] > perf_model.mva(batched, 4, 1, 1)[
        "throughput_it_per_s"]
    with pytest.raises(ValueError):
        perf_model.mva(st, 0, 1)


@pytest.mark.skipif(not (RECORDED / "summary.json").exists(), reason=f"no recorded sweep in {RECORDED}")
def test_model_fit_on_recorded_data() -> None:
    """The committed sweep: the fit comes from its one-client runs; the steady-state runs (one
    host, weak scaling, EKE: MPMD, connect, Fortran) are predicted within a factor 2 (run_model's
    mean, throughput); the calibrated paper point meets the read-offs within their 15 %."""
    rows = perf_model.load_rows(RECORDED)
    summaries = json.loads((RECORDED / "summary.json").read_text())
    fitted = perf_model.fit(rows)
    assert "eke" in fitted and all(fitted["eke"].call(c) > 0 for c in perf_model.CALLS)
    perf_model.fit_slowdown(summaries, fitted, 10000)
    assert 0 <= fitted["eke"].slowdown < 3
    checked = perf_model.check(summaries, fitted, 10000)
    assert len(checked) == sum(1 for s in summaries if s["ok"] and s["workload"] in fitted)
    steady = [r for r in checked if r["workload"] == "eke" and r["hosts"] == 1 and r["scaling"] == "weak"]
    assert len(steady) >= 4 and any(r["clients"] > 1 for r in steady)
    for r in steady:
        assert 1 / 2 < r["model"]["ratio_mean"] < 2, r
        assert 1 / 2 < r["throughput"]["measured"] / r["throughput"]["predicted"] < 2, r
    point = next(p for p in perf_model.predict_paper() if p["assumptions"] == "calibrated"
                 and p["clients"] == 1800 and p["nodes"] == 4)
    for c in ("put", "script", "model"):
        assert point[c]["mean"] == pytest.approx(perf_model.PUBLISHED[c], rel=0.15)


@pytest.mark.skipif(netns.unavailable() is not None, reason=f"virtual hosts: {netns.unavailable()}")
def test_virtual_hosts_made_and_removed() -> None:
    """Three namespaces and a switch, TCP between every pair, and nothing left afterwards."""
    before = set(netns.namespaces())
    with netns.VirtualHosts(3, prefix="mpstest") as vh:
        made = set(netns.namespaces()) - before
        assert made == {"mpstest-sw", "mpstest-h0", "mpstest-h1", "mpstest-h2"}
        vh.check_tcp()
        agent = vh.agent
        assert agent is not None and agent.exists()
        env = vh.environ({})
        assert env["OMPI_MCA_btl"] == "tcp,self" and env["OMPI_MCA_plm_rsh_agent"] == str(agent)
        out = run(vh.wrap(["ip", "-4", "-o", "addr", "show"], 1), timeout=30).stdout
        assert "10.77.0.2/24" in out and "10.77.0.1/24" not in out
    assert set(netns.namespaces()) == before
    assert not agent.exists()
