"""A driver that blocks in exp.start on hanging members; the test sends it SIGINT (Ctrl-C) or
SIGTERM and checks that nothing it started is left."""

import sys
from pathlib import Path

from mpistage.launcher import Experiment

HERE = Path(__file__).resolve().parent
launcher, exp_path = sys.argv[1], sys.argv[2]
exp = Experiment("interrupt", exp_path=exp_path, launcher=launcher)
db = exp.create_database(db_nodes=1)
exp.start(db)
rs = exp.create_run_settings(sys.executable, [str(HERE / "launcher_member.py"), "--mode", "hang", f"--tag={exp_path}"])
ens = exp.create_ensemble("hung", run_settings=rs, replicas=2)
exp.generate(ens)
exp.start(ens, block=True)
