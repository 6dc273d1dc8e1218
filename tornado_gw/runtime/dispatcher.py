"""The single consumer of commands: runs the reducer, hands its events to the debug
trail and its effects to the runner.

Commands are processed synchronously and in arrival order. A command
submitted while another is being processed (an effect's result, a socket that
closed during a write) waits in a deque and runs right after, so the reducer
is never re-entered. No Future or Task per command (PITFALLS 12): the fan-out
path costs one function call per event.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Sequence

from tornado_gw.core import commands as c
from tornado_gw.core import effects as fx
from tornado_gw.core.events import Event, describe, take
from tornado_gw.core.protocol import CloseCode
from tornado_gw.core.reducer import handle
from tornado_gw.core.state import Gateway

log = logging.getLogger(__name__)


class Dispatcher:
    def __init__(self, state: Gateway) -> None:
        self.state = state
        self._pending: deque[c.Command] = deque()
        self._running = False
        self._perform: Callable[[Sequence[fx.Effect]], None] = lambda effects: None
        # what sees the events applied: the debug trail in development mode, else nothing
        self.observe: Callable[[list[Event]], None] = lambda events: None

    def attach(self, perform: Callable[[Sequence[fx.Effect]], None]) -> None:
        """Connect the effect runner (built after the dispatcher it submits to)."""
        self._perform = perform

    def submit(self, cmd: c.Command) -> None:
        """Process ``cmd`` now, or right after the command being processed."""
        self._pending.append(cmd)
        if self._running:
            return
        self._running = True
        try:
            while self._pending:
                self._process(self._pending.popleft())
        finally:
            self._running = False

    def _process(self, cmd: c.Command) -> None:
        try:
            events, effects = handle(self.state, cmd)
        except Exception:
            # Our own bug, not the client's: keep serving everyone else. The events applied
            # before it stay (each one whole: ``evolve`` is the only code that changes state).
            log.exception("! reducer failed on %s", type(cmd).__name__)
            events = take(self.state)
            conn_id = getattr(cmd, "conn_id", None)
            effects = [] if conn_id is None else [
                fx.CloseConnection(conn_id, CloseCode.INTERNAL_ERROR, "internal error")]
        if events:
            if log.isEnabledFor(logging.DEBUG):  # the support engineer's view (docs/operations.md)
                for event in events:
                    log.debug("event %s", type(event).__name__, extra={"event": describe(event)})
            self.observe(events)
        self._perform(effects)
