"""Run the gateway with a probe of its own heap: RSS alone cannot tell a leak from fragmentation.

``python bench/heap_probe.py OUT [gateway args]`` starts ``tornado_gw`` (same command line as
``python -m tornado_gw``); on each SIGUSR1 it collects garbage and appends one JSON line to
``OUT``: objects the collector tracks, pymalloc's blocks, bytes in use and arenas, and glibc's
bytes in use. A leak makes the bytes in use grow with the work done; fragmentation leaves them
flat while arenas and RSS stay at their high-water mark (pymalloc returns a 1 MiB arena to the
system only once every block in it is free). ``bench.days_in_minutes --heap`` drives it.
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import re
import signal
import sys
import tempfile
from types import FrameType


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
                 "fordblks", "keepcost")]


def _pymalloc_stats() -> dict[str, int]:
    """Parse ``sys._debugmallocstats`` (it writes to file descriptor 2, so borrow it)."""
    with tempfile.TemporaryFile() as sink:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        sink.seek(0)
        text = sink.read().decode()
    found = {}
    for key, label in (("pymalloc_bytes", "bytes in allocated blocks"),
                       ("pymalloc_arenas", "arenas allocated current")):
        match = re.search(rf"# {label}\s*=\s*([\d,]+)", text)
        found[key] = int(match.group(1).replace(",", "")) if match else -1
    return found


def sample() -> dict[str, int]:
    gc.collect()
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _MallInfo2
    return {"gc_objects": len(gc.get_objects()), "blocks": sys.getallocatedblocks(),
            **_pymalloc_stats(), "glibc_bytes": libc.mallinfo2().uordblks}


def main() -> int:
    out = sys.argv.pop(1)

    def dump(signum: int, frame: FrameType | None) -> None:
        with open(out, "a") as fh:
            fh.write(json.dumps(sample()) + "\n")

    signal.signal(signal.SIGUSR1, dump)
    from tornado_gw.cli import main as gateway_main

    return gateway_main()


if __name__ == "__main__":
    sys.exit(main())
