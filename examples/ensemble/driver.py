"""A SmartSim-style ensemble driver on mpistage: the only change from SmartSim is the import.

    .venv/bin/python examples/ensemble/driver.py            # launcher "auto": spawn, else mpiexec
    .venv/bin/mpistage experiment status ensemble-demo      # from another terminal, while it runs

Four members sweep a parameter (``;scale;`` in sim.cfg and ``--scale``), each writing under its own
key prefix on two shards; an analysis model then reads every member through ``set_data_source``.
"""

import sys
from pathlib import Path

from mpistage import Client, Experiment

HERE = Path(__file__).resolve().parent

exp = Experiment("ensemble-demo", launcher="auto")
db = exp.create_database(db_nodes=2)
exp.start(db)

rs = exp.create_run_settings(sys.executable, [str(HERE / "member.py")])
rs.set_tasks(2)
ensemble = exp.create_ensemble("sim", params={"scale": [0.5, 1.0, 2.0, 4.0]}, run_settings=rs,
                               params_as_args=["scale"])
ensemble.attach_generator_files(to_configure=[str(HERE / "sim.cfg")])
ensemble.enable_key_prefixing()

analysis = exp.create_model("analysis", exp.create_run_settings(sys.executable, [str(HERE / "analysis.py")]))
analysis.register_incoming_entity(ensemble)
exp.generate(ensemble, analysis, overwrite=True)

exp.start(ensemble, block=True)          # live table on a terminal, plain lines otherwise
exp.start(analysis, block=True)
print(exp.get_status(ensemble, analysis))
client = Client(address=db.get_address()[0])   # the driver can read the store too
print("sim_0 field sum:", float(client.get_tensor("sim_0.field").sum()))
exp.summary()
exp.stop(db)
