"""Reads every member's field through set_data_source (SSKEYIN lists the members)."""

import os

from mpistage import Client

client = Client()
for source in os.environ["SSKEYIN"].split(","):
    client.set_data_source(source)
    print(f"{source}: field mean {float(client.get_tensor('field').mean()):.2f}")
