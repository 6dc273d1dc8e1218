"""The e2e fixtures (real gateway and relay processes, per-test tables and prefix) for the client tests."""

import pytest

from tests.e2e.conftest import gateway, start_gateway
from tests.e2e.test_durable import new_cluster

cluster = pytest.fixture(new_cluster, name="cluster")

__all__ = ["cluster", "gateway", "start_gateway"]
