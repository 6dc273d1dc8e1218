"""All the Postgres SQL: the outbox, the members table, and the names derived from the settings.

One module for the gateway (``adapters/pg_outbox.py``), the relay
(``relay/worker.py``) and ``migrate``, so that the outbox's rules are written
down once, next to the statements that rely on them.

Rules that make CONTRACT §4 hold (the code relies on each of them):

1. Only the active relay writes ``seq`` and ``published_at``, and only on the
   session that holds the relay's advisory lock (one relay at a time).
2. Rows are claimed by ``seq IS NULL``, never by ``id > last id`` (PITFALLS 3).
3. A batch is numbered ``max(seq) + 1 ...`` in ``id`` order and that is
   COMMITTED before any frame of it is published, so a frame published twice
   (a relay killed between PUBLISH and the ``published_at`` update) carries the
   same seq. ``max(seq)`` is read once per lock acquisition and then kept in
   memory: while the lock is held, nobody else numbers.
4. Numbered seqs are contiguous and become visible a whole batch at a time, so
   the numbered rows are always ``[min(seq), max(seq)]`` with no hole.
5. Retention deletes only a prefix of that range and always keeps the newest
   numbered row, so ``max(seq) + 1`` keeps increasing and ``min(seq)`` tells a
   replay whether the events it asks for were trimmed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from psycopg import sql

from tornado_gw.settings import TABLE_NAME, TABLE_NAME_EXPECTED, Settings

NOTIFY_FUNCTION = sql.Identifier("tornado_gw_outbox_notify")


@dataclass(frozen=True, slots=True)
class Names:
    """The identifiers of one outbox/members pair, validated."""

    outbox: sql.Identifier
    members: sql.Identifier
    unpublished_index: sql.Identifier
    unnumbered_index: sql.Identifier
    channel_seq_index: sql.Identifier
    notify_trigger: sql.Identifier
    notify_channel: str
    lock_key: int

    def render(self, template: sql.SQL) -> sql.Composed:
        """``template`` with ``{outbox}``, ``{members}``... filled in."""
        return template.format(
            outbox=self.outbox,
            members=self.members,
            unpublished_index=self.unpublished_index,
            unnumbered_index=self.unnumbered_index,
            channel_seq_index=self.channel_seq_index,
            notify_trigger=self.notify_trigger,
            notify_channel=sql.Identifier(self.notify_channel),
            notify_channel_text=sql.Literal(self.notify_channel),
            notify_function=NOTIFY_FUNCTION,
        )


def table_name(setting: str, value: str) -> str:
    """``value`` if it is a plain table name; else ValueError naming ``setting``."""
    if not TABLE_NAME.fullmatch(value):
        raise ValueError(f"{setting}: {value!r} is not a valid table name ({TABLE_NAME_EXPECTED})")
    return value


def one_line(exc: BaseException) -> str:
    """An exception as one log line (libpq messages span several)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def names(settings: Settings) -> Names:
    """The validated names for ``settings``. Raises ValueError naming the bad setting."""
    outbox = table_name("outbox_table", settings.outbox_table)
    members = table_name("members_table", settings.members_table)
    digest = hashlib.sha256(f"tornado_gw.relay:{outbox}".encode()).digest()
    return Names(
        outbox=sql.Identifier(outbox),
        members=sql.Identifier(members),
        unpublished_index=sql.Identifier(f"{outbox}_unpublished_idx"),
        unnumbered_index=sql.Identifier(f"{outbox}_unnumbered_idx"),
        channel_seq_index=sql.Identifier(f"{outbox}_channel_seq_idx"),
        notify_trigger=sql.Identifier(f"{outbox}_notify"),
        notify_channel=f"{outbox}_inserted",
        # One relay per outbox table per database: advisory locks are per database.
        lock_key=int.from_bytes(digest[:8], "big", signed=True),
    )


# Rule 1. A session-level lock, taken on the same session that numbers and
# marks rows: if that session dies the lock goes with it, and every statement
# that writes seq ran while the lock was held. "try" so a standby can poll,
# log once, and stop on SIGTERM instead of sitting in a server-side wait.
TRY_LOCK = sql.SQL("SELECT pg_try_advisory_lock(%(key)s)")

LISTEN = sql.SQL("LISTEN {notify_channel}")

# Rule 2, the hardest line. A BIGSERIAL id is taken at INSERT time but the row
# becomes visible at COMMIT, so transaction A may take id 7, transaction B id 8,
# and B commit first. A relay that remembered "published up to id 8" would never
# see 7. Claiming by "seq IS NULL" picks 7 up whenever it becomes visible, and
# gives it the next seq then: seq follows publish order, not insert order, so
# no client that has seen seq N can later receive a lower seq.
# Rule 3: the last seq is read right after the lock is taken, on the session
# that holds it; while the lock is held nobody else numbers, so the relay keeps
# it in memory. Any error ends the session (and the lock), and the next
# acquisition reads it again.
HEAD = sql.SQL("SELECT coalesce(max(seq), 0) FROM {outbox}")
NO_SEQ_LIMIT = 2**63 - 1  # BIGINT's largest: "no upper bound" for READ_AFTER's %(until)s

# Claim and number a batch in one autocommit statement: its COMMIT is the
# statement's end. row_number() in id order gives last + 1 ... last + n
# (rule 4); RETURNING order is unspecified, the caller sorts by seq.
CLAIM_AND_NUMBER = sql.SQL(
    "UPDATE {outbox} AS o SET seq = %(last_seq)s + c.n "
    "FROM (SELECT id, row_number() OVER (ORDER BY id) AS n FROM {outbox} "
    "WHERE seq IS NULL ORDER BY id LIMIT %(limit)s) AS c "
    "WHERE o.id = c.id RETURNING o.id, o.channel, o.event_type, o.payload, o.seq"
)

MARK_PUBLISHED = sql.SQL("UPDATE {outbox} SET published_at = now() WHERE id = ANY(%(ids)s)")

# Rule 3, recovery: rows numbered by a relay that died before marking them.
# They are published again with the seq they already have, in seq order,
# before anything new is numbered. ``after``: the last seq already taken, as
# the previous batch may still be in flight, not yet marked.
NUMBERED_UNPUBLISHED = sql.SQL(
    "SELECT id, channel, event_type, payload, seq FROM {outbox} "
    "WHERE published_at IS NULL AND seq > %(after)s ORDER BY seq LIMIT %(limit)s"
)

# Rule 5. Everything below the horizon may go: the lowest seq that is still
# young or unpublished, or else the newest seq (which is always kept).
RETENTION_HORIZON = sql.SQL(
    "SELECT coalesce("
    "(SELECT min(seq) FROM {outbox} WHERE seq IS NOT NULL AND (published_at IS NULL "
    "OR published_at >= now() - make_interval(secs => %(retention_s)s))), "
    "(SELECT max(seq) FROM {outbox}))"
)

# Small batches in seq order: short transactions, and the prefix rule holds
# after every one of them.
DELETE_BELOW = sql.SQL(
    "DELETE FROM {outbox} WHERE seq IN "
    "(SELECT seq FROM {outbox} WHERE seq < %(horizon)s ORDER BY seq LIMIT %(limit)s)"
)

# --- the gateway's reads and writes (adapters/pg_outbox.py) ---------------------------------

# The oldest seq still kept comes with the rows: events after ``after_seq`` that
# retention already deleted are below it (rules 4 and 5), and a replay that
# cannot prove it is complete must say so (PITFALLS 5).
READ_AFTER = sql.SQL(
    "SELECT oldest.seq, r.seq, r.channel, r.event_type, r.payload "
    "FROM (SELECT min(seq) AS seq FROM {outbox}) AS oldest "
    "LEFT JOIN LATERAL (SELECT seq, channel, event_type, payload FROM {outbox} "
    "WHERE channel = ANY(%(channels)s) AND seq > %(after)s AND seq <= %(until)s "
    "ORDER BY seq LIMIT %(limit)s) AS r ON true "
    "ORDER BY r.seq"
)

# Which of the (user, conversation) pairs asked are members: the lookups of many
# connections in one round trip (``adapters/pg_outbox.py`` ``PgMembership``).
MEMBERS = sql.SQL(
    "SELECT m.user_id, m.conversation_id FROM {members} AS m "
    "JOIN unnest(%(users)s::text[], %(conversations)s::text[]) AS asked(user_id, conversation_id) "
    "ON m.user_id = asked.user_id AND m.conversation_id = asked.conversation_id"
)

APPEND = sql.SQL(
    "INSERT INTO {outbox} (channel, event_type, payload) "
    "VALUES (%(channel)s, %(type)s, %(payload)s) RETURNING id"
)
