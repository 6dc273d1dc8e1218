"""CPU time and resident memory of process trees, read from /proc.

User+system CPU of the server process is the bench's most stable figure on a noisy
2-core box: it does not depend on what else got scheduled, only on the work done.
"""

from __future__ import annotations

import os

_TICK_US = 1_000_000 / os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name, or None once the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read().decode()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return raw[raw.rindex(")") + 2:].split()


def tree(pid: int) -> list[int]:
    """The process and all its live descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields is not None:
                children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, ()))
    return found


def cpu_us(pids: list[int]) -> float:
    """User+system CPU microseconds consumed so far by ``pids`` (and by their reaped children)."""
    total = 0.0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            # utime, stime, cutime, cstime: fields 14-17 of stat(5), 12-15 after the name
            total += sum(int(value) for value in fields[11:15]) * _TICK_US
    return total


def rss_bytes(pids: list[int]) -> int:
    """Resident set size of ``pids`` added up (shared pages counted in each)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/statm", "rb") as fh:
                total += int(fh.read().split()[1]) * _PAGE
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def box_busy_us() -> float:
    """CPU microseconds all cores of the machine spent not idle (any process, ours or not)."""
    with open("/proc/stat", "rb") as fh:
        fields = [int(value) for value in fh.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) * _TICK_US


def tree_cpu_us(pid: int) -> float:
    return cpu_us(tree(pid))


def tree_rss_bytes(pid: int) -> int:
    return rss_bytes(tree(pid))
