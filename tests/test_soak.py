"""The soak, short (about 30 s of load; scaling/soak.py --seconds 600 is the 10-minute one): 6 client
jobs of mixed operations (tensors on every path, datasets and lists, a model and a script, engine
faults, deletes, saves) against 2 shards in connect mode, clients SIGKILLed and started again;
every value read back, none lost or wrong."""

import re
import sys

from harness import ROOT, run


def test_six_clients_with_kills_saves_and_engine_faults_lose_nothing(tmp_path):
    out = run([sys.executable, str(ROOT / "scaling" / "soak.py"), "--seconds", "30", "--kill-every", "10",
               "--json", str(tmp_path / "soak.json")], timeout=400).stdout
    summary = re.search(r"soak: .*", out).group(0)
    assert "lost=0 wrong=0" in summary, out
    kills, verified, faults, reread = (int(re.search(p, summary).group(1)) for p in (
        r"(\d+) kills", r"(\d+) values verified", r"(\d+) engine faults", r"(\d+) values re-read"))
    assert kills >= 2 and verified > 1000 and faults > 0 and reread > 0, summary
