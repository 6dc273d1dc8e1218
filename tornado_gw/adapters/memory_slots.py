"""The connection count of the embedded default: one process, so a dict is the cluster."""

from __future__ import annotations

from collections.abc import Sequence


class MemorySlots:
    """Implements ``ports.ConnectionSlots`` in-process (slots never outlive the process)."""

    def __init__(self, ttl_s: float) -> None:
        self._ttl_s = ttl_s
        self._users: dict[str, dict[str, float]] = {}  # user -> slot -> expiry

    async def claim(self, user_id: str, slot_id: str, limit: int, now: float) -> bool:
        slots = {slot: until for slot, until in self._users.get(user_id, {}).items() if until > now}
        if slot_id not in slots and len(slots) >= limit:
            self._users[user_id] = slots
            return False
        slots[slot_id] = now + self._ttl_s
        self._users[user_id] = slots
        return True

    async def claim_many(self, claims: Sequence[tuple[str, str, int]], now: float) -> list[bool]:
        return [await self.claim(user_id, slot_id, limit, now) for user_id, slot_id, limit in claims]

    async def release(self, user_id: str, slot_id: str) -> None:
        slots = self._users.get(user_id)
        if slots is not None:
            slots.pop(slot_id, None)
            if not slots:
                del self._users[user_id]

    async def refresh(self, slots: Sequence[tuple[str, str]], now: float) -> None:
        for user_id, slot_id in slots:
            held = self._users.get(user_id)
            if held is not None and slot_id in held:
                held[slot_id] = now + self._ttl_s
