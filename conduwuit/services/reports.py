"""Content reports (``/rooms/{roomId}/report[/{eventId}]``, ``/users/{userId}/report``).

Checks as conduwuit makes them: a reported event must exist in the named room and the
reporter must be joined there; a reported room must be one this server is in; a reason
is at most 750 characters. Every answer, refusals included, comes after a short random
delay (the spec's suggestion against probing which events, rooms or users exist).

A report is logged at WARNING and handed to each ``on_report`` hook with its text;
the admin room registers one to post it (with an ``@room`` ping) once it exists.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from typing import Any

import attrs
import trio

from conduwuit.errors import MatrixError
from conduwuit.protocol.ids import UserId

from .rooms import Rooms
from .users import Users

log = logging.getLogger(__name__)

MAX_REASON = 750
# Seconds; conduwuit waits 2-5 s. Tests set (0, 0).
DEFAULT_DELAY = (0.5, 2.0)

ReportHook = Callable[[str], None]


@attrs.define
class Reports:
    rooms: Rooms
    users: Users
    delay: tuple[float, float] = DEFAULT_DELAY
    on_report: list[ReportHook] = attrs.field(factory=list)

    async def report_event(self, reporter: str, room_id: str, event_id: str,
                           body: dict[str, Any]) -> None:
        await self._wait()
        reason = _reason(body)
        score = body.get("score")
        if score is not None and (not isinstance(score, int) or isinstance(score, bool)
                                  or not -100 <= score <= 0):
            raise MatrixError(400, "M_INVALID_PARAM", "score must be an integer from -100 to 0")
        event = self.rooms.events.get(event_id)
        if event is None or event.room_id != room_id:
            raise MatrixError(404, "M_NOT_FOUND", "Event not found in that room")
        if not self.rooms.membership.is_joined(room_id, reporter):
            raise MatrixError(404, "M_NOT_FOUND", "You are not in the room you are reporting")
        self._deliver(f"Event report from {reporter}: event {event_id} in room {room_id}, "
                      f"sent by {event.sender}. Reason: {reason}")

    async def report_room(self, reporter: str, room_id: str, body: dict[str, Any]) -> None:
        await self._wait()
        reason = _reason(body)
        if self.rooms.events.room_version(room_id) is None \
                or not self.rooms.membership.servers(room_id):
            raise MatrixError(404, "M_NOT_FOUND", "Room not found")
        self._deliver(f"Room report from {reporter}: room {room_id}. Reason: {reason}")

    async def report_user(self, reporter: str, user_id: str, body: dict[str, Any]) -> None:
        await self._wait()
        reason = _reason(body)
        if UserId.try_parse(user_id) is None:
            raise MatrixError(400, "M_INVALID_PARAM", "Invalid user id")
        if self.users.is_local(user_id) and not self.users.exists(user_id):
            raise MatrixError(404, "M_NOT_FOUND", "User not found")
        self._deliver(f"User report from {reporter}: user {user_id}. Reason: {reason}")

    async def _wait(self) -> None:
        low, high = self.delay
        if high > 0:
            fraction = secrets.randbelow(1001) / 1000
            await trio.sleep(low + (high - low) * fraction)

    def _deliver(self, text: str) -> None:
        log.warning("%s", text)
        for hook in self.on_report:
            hook(text)


def _reason(body: dict[str, Any]) -> str:
    reason = body.get("reason", "")
    if reason is None:
        reason = ""
    if not isinstance(reason, str):
        raise MatrixError(400, "M_BAD_JSON", "'reason' must be a string")
    if len(reason) > MAX_REASON:
        raise MatrixError(400, "M_INVALID_PARAM",
                          f"Reason too long, should be {MAX_REASON} characters or fewer")
    return reason
