"""Merging a replay with the live frames that arrived while it was loading.

The live channel is subscribed before the log is read, and what arrives
meanwhile is buffered (PITFALLS 4, centrifuge ``recovery.MergePublications``).
Merging orders both by ``seq``, drops duplicates and anything the connection
already has, and appends the unnumbered live frames (typing, presence) last.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from tornado_gw.core.records import LoggedEvent

Buffered = tuple[int | None, str, bytes, str]  # (seq, channel, data, frame type)
Outgoing = tuple[str, bytes, str]  # (channel, data, frame type)


def merge_replay(
    replayed: Iterable[LoggedEvent], buffered: Iterable[Buffered], delivered: Mapping[str, int],
    floor: int = 0,
) -> tuple[list[Outgoing], int, dict[str, int]]:
    """Frames to send in order, how many numbered events they hold, and the channels whose
    highest seq the connection has (``delivered``, only read) they raise, with the new one;
    a channel ``delivered`` does not hold starts at ``floor`` (``Connection.forgotten_seq``).
    """
    raised: dict[str, int] = {}
    numbered: dict[int, Outgoing] = {}
    for event in replayed:
        numbered.setdefault(event.seq, (event.channel, event.data, "replay"))
    unnumbered: list[Outgoing] = []
    for seq, channel, data, kind in buffered:
        if seq is None:
            unnumbered.append((channel, data, kind))
        else:
            numbered.setdefault(seq, (channel, data, kind))
    ordered: list[Outgoing] = []
    for seq in sorted(numbered):
        channel, data, kind = numbered[seq]
        if seq > raised.get(channel, delivered.get(channel, floor)):
            raised[channel] = seq
            ordered.append((channel, data, kind))
    return ordered + unnumbered, len(ordered), raised
