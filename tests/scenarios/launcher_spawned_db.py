"""A database spawned by the experiment: ``Experiment(launcher="spawn")`` spawns 2 server ranks,
the driver and 2 spawned writers reach them with a plain ``Client`` (the driver through
``db.get_address()``), a reader checks the writers' values, then ``exp.stop(db)`` stops the servers
through their parent intercommunicator; prints one REPORT line (JSON).

    python launcher_spawned_db.py EXP_PATH
"""

import json
import sys
import time
from pathlib import Path

from mpistage import Client
from mpistage.launcher import Experiment

HERE = Path(__file__).resolve().parent
exp_path = sys.argv[1]
tag = f"--tag={exp_path}"
exp = Experiment("spawndb", exp_path=exp_path, launcher="spawn")
db = exp.create_database(db_nodes=2)
exp.start(db)
shards = len(Client(address=db.get_address()[0]).get_server_info())

rs = exp.create_run_settings(sys.executable, [str(HERE / "launcher_member.py"), tag])
writers = exp.create_ensemble("w", params={"value": [1.5, 2.5]}, run_settings=rs, params_as_args=["value"])
writers.enable_key_prefixing()
reader = exp.create_model("reader", exp.create_run_settings(
    sys.executable, [str(HERE / "launcher_reader.py"), "w_0=1.5", "w_1=2.5", tag]))
reader.register_incoming_entity(writers)
exp.generate(writers, reader)
exp.start(writers, block=True)
exp.start(reader, block=True)

job = exp._db_job
t0 = time.monotonic()
exp.stop(db)
stop_s = time.monotonic() - t0
report = {"db_launcher": job.launcher.name, "shards_seen": shards, "stop_s": stop_s,
          "servers_alive_after_stop": job.launcher.alive(job), "db_status": db.status.value,
          "db_returncode": job.returncode, "db_reason": job.reason,
          "status": {m.name: s.value for m, s in zip([*writers, reader], exp.get_status(writers, reader), strict=True)},
          "reader_out": (reader.path / "reader.out").read_text(), "db_dir": str(db.path)}
exp.close()
print("REPORT " + json.dumps(report), flush=True)
