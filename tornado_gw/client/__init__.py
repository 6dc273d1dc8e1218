"""An asyncio client for the gateway that never misses a message (docs/clients.md).

Installed with ``pip install "tornado_gw[client]"``; it imports the standard
library and ``websockets`` only, nothing of the server side.

    client = await connect("ws://127.0.0.1:8081/ws", get_token=fetch_token)
    await client.subscribe("c1")
    async for event in client:
        ...
"""

from tornado_gw.client.connection import Client, connect
from tornado_gw.client.state import ClientState, Event, Settings, StateChange

__all__ = ["Client", "ClientState", "Event", "Settings", "StateChange", "connect"]
