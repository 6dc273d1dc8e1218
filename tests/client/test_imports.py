"""``tornado_gw.client`` stands alone: importing it pulls nothing of the server side."""

from __future__ import annotations

import subprocess
import sys

from tests.e2e.harness import ROOT

SERVER_SIDE = ("tornado", "redis", "psycopg", "psycopg_pool", "jwt", "ujson", "yaml", "prometheus_client")


def test_importing_the_client_loads_no_server_dependency() -> None:
    probe = (
        "import sys, tornado_gw.client\n"
        f"loaded = sorted(m for m in sys.modules if m.split('.')[0] in {SERVER_SIDE!r})\n"
        "server = sorted(m for m in sys.modules if m.startswith('tornado_gw.') "
        "and not m.startswith('tornado_gw.client'))\n"
        "print(loaded, server)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[] []"
