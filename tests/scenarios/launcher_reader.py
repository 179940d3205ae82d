"""Reads the tensor "value" of every incoming entity (SSKEYIN) through set_data_source and checks
it against the expected values given as NAME=VALUE arguments."""

import os
import sys

from mpistage import Client

client = Client()
sources = [s for s in os.environ.get("SSKEYIN", "").split(",") if s]
expected = dict(arg.split("=", 1) for arg in sys.argv[1:] if "=" in arg and not arg.startswith("--"))
assert sorted(sources) == sorted(expected), (sources, expected)
for source in sources:
    client.set_data_source(source)
    got = float(client.get_tensor("value")[0])
    assert got == float(expected[source]), (source, got, expected[source])
    print(f"read {source}.value = {got}", flush=True)
print(f"reader: {len(sources)} sources ok", flush=True)
