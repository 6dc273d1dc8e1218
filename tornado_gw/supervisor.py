"""``serve --workers N``: N gateway processes on one port under one supervisor.

One gateway process runs one IOLoop on one core. Each worker is a whole gateway
(its own IOLoop, Redis connections and instance id) that binds the port with
``SO_REUSEPORT``, so the kernel spreads new connections over the workers; Redis
makes them one service exactly as it does for instances on separate hosts
(settings refuse ``workers > 1`` without it). The supervisor only forks, watches
and signals: a worker that dies is started again, SIGTERM or SIGINT is passed on
to every worker, which drains as it would alone, and the supervisor exits once
they all have. Workers are forked before any event loop or thread exists.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType

log = logging.getLogger(__name__)

POLL_S = 0.1
RESTART_DELAY_S = 0.5
EARLY_EXIT_S = 5.0  # a worker that dies sooner than this after its start failed to start
MAX_EARLY_EXITS = 3  # failed starts in a row before the supervisor gives up (e.g. the port is taken)
KILL_MARGIN_S = 5.0  # past the workers' own drain deadline, what is left is killed


@dataclass
class _Worker:
    slot: int
    pid: int
    started_at: float


@dataclass
class Supervisor:
    """Keeps ``count`` forked workers running ``run_worker`` until told to stop."""

    count: int
    run_worker: Callable[[], int]
    drain_timeout_s: float
    workers: dict[int, _Worker] = field(default_factory=dict)
    early_exits: int = 0
    stop_signal: int | None = None

    def run(self) -> int:
        """Blocks until SIGTERM/SIGINT and the end of every worker; the exit code."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        for slot in range(self.count):
            self._spawn(slot)
        log.info("= supervising %d workers (pids %s)", self.count, self._pids())
        pending: dict[int, float] = {}  # slot -> when to start it again
        while self.stop_signal is None:
            for worker, status in self._reap():
                pending[worker.slot] = time.monotonic() + self._after_death(worker, status)
            if self.early_exits >= MAX_EARLY_EXITS:
                log.error("! workers keep failing at start-up (%d in a row): stopping", self.early_exits)
                return self._stop(exit_code=1)
            for slot, due in list(pending.items()):
                if time.monotonic() >= due:
                    del pending[slot]
                    self._spawn(slot)
            time.sleep(POLL_S)
        received = signal.Signals(self.stop_signal).name
        log.info("= %s: passing it on to %d workers", received, len(self.workers))
        return self._stop(exit_code=0)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.stop_signal = signum

    def _spawn(self, slot: int) -> None:
        pid = os.fork()
        if pid == 0:  # the worker: the gateway's own handlers replace these once its loop runs
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os._exit(self._worker_main())
        self.workers[pid] = _Worker(slot, pid, time.monotonic())

    def _worker_main(self) -> int:
        try:
            return self.run_worker()
        except BaseException:  # the forked child must never return into the supervisor's code
            traceback.print_exc()
            return 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()

    def _reap(self) -> list[tuple[_Worker, int]]:
        """Workers that ended since the last call, with their wait status."""
        ended = []
        while self.workers:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            worker = self.workers.pop(pid, None)
            if worker is not None:
                ended.append((worker, status))
        return ended

    def _after_death(self, worker: _Worker, status: int) -> float:
        """Log a worker's unexpected end; the delay before its slot is filled again."""
        lived_s = time.monotonic() - worker.started_at
        self.early_exits = self.early_exits + 1 if lived_s < EARLY_EXIT_S else 0
        log.warning("! worker %d (pid %d) %s after %.1f s: starting another", worker.slot, worker.pid,
                    _describe(status), lived_s)
        return RESTART_DELAY_S

    def _stop(self, exit_code: int) -> int:
        """SIGTERM to every worker, wait for their drain, kill what outlives it."""
        for pid in self.workers:
            _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + self.drain_timeout_s + KILL_MARGIN_S
        while self.workers and time.monotonic() < deadline:
            for worker, status in self._reap():
                if os.waitstatus_to_exitcode(status) != 0:
                    exit_code = 1
                    log.warning("! worker %d (pid %d) %s while draining", worker.slot, worker.pid,
                                _describe(status))
            time.sleep(POLL_S)
        for pid in list(self.workers):
            log.error("! worker pid %d still running %.1f s after SIGTERM: killed", pid,
                      self.drain_timeout_s + KILL_MARGIN_S)
            _signal(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            exit_code = 1
        log.info("= all workers stopped")
        return exit_code

    def _pids(self) -> str:
        return ", ".join(str(pid) for pid in self.workers)


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # ended meanwhile; reaped by the caller
        os.kill(pid, sig)


def _describe(status: int) -> str:
    code = os.waitstatus_to_exitcode(status)
    return f"killed by {signal.Signals(-code).name}" if code < 0 else f"exited with {code}"
