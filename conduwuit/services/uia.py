"""User-interactive authentication (UIA) sessions.

An endpoint protected by UIA names its flows (lists of stages) and how to
check each stage. The first request gets 401 with the flows, params and a new
session id; each following request completes one stage of that session. When
some flow is complete the request goes through and the session is gone.
Sessions live in memory, expire after :data:`SESSION_TTL` seconds, and are
capped so that unauthenticated clients cannot grow the table without bound.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import attrs

from conduwuit.errors import MatrixError

SESSION_TTL = 15 * 60.0
MAX_SESSIONS = 10_000

# Checks one stage's auth dict for a session; raises MatrixError to refuse it.
StageCheck = Callable[[Mapping[str, Any], "UiaSession"], Awaitable[None]]


@attrs.define
class UiaSession:
    id: str
    user_id: str | None
    created: float
    completed: list[str] = attrs.field(factory=list)
    # What completed stages established, e.g. which registration token was used.
    data: dict[str, Any] = attrs.field(factory=dict)


@attrs.define
class Uia:
    ttl: float = SESSION_TTL
    max_sessions: int = MAX_SESSIONS
    clock: Callable[[], float] = time.monotonic
    _sessions: OrderedDict[str, UiaSession] = attrs.field(factory=OrderedDict)

    async def authenticate(
        self,
        auth: object,
        flows: list[list[str]],
        checks: Mapping[str, StageCheck],
        *,
        user_id: str | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> UiaSession:
        """Advance the request's session; returns it once a flow is complete.

        ``user_id`` binds the session to the authenticated user, so one user's
        half-finished session cannot be finished by someone else.
        """
        params = params or {}
        if auth is None:
            raise self._challenge(self._new_session(user_id), flows, params)
        if not isinstance(auth, Mapping):
            raise MatrixError(400, "M_BAD_JSON", "'auth' must be an object")
        session = self._session_for(auth, user_id)
        stage = auth.get("type")
        if stage is not None:
            if not isinstance(stage, str) or not any(stage in flow for flow in flows):
                raise self._challenge(session, flows, params, "M_UNRECOGNIZED",
                                      f"Authentication stage {stage!r} is not offered here")
            try:
                await checks[stage](auth, session)
            except MatrixError as refused:
                raise self._challenge(session, flows, params, refused.errcode,
                                      refused.error) from None
            if stage not in session.completed:
                session.completed.append(stage)
        if any(all(s in session.completed for s in flow) for flow in flows):
            self._sessions.pop(session.id, None)
            return session
        raise self._challenge(session, flows, params)

    def _session_for(self, auth: Mapping[str, Any], user_id: str | None) -> UiaSession:
        session_id = auth.get("session")
        if session_id is None:
            return self._new_session(user_id)
        self._expire()
        session = self._sessions.get(session_id) if isinstance(session_id, str) else None
        if session is None:
            raise MatrixError(400, "M_UNKNOWN", "Unknown or expired UIA session")
        if session.user_id != user_id:
            raise MatrixError(403, "M_FORBIDDEN", "This UIA session belongs to another user")
        return session

    def _new_session(self, user_id: str | None) -> UiaSession:
        self._expire()
        while len(self._sessions) >= self.max_sessions:
            self._sessions.popitem(last=False)
        session = UiaSession(secrets.token_urlsafe(18), user_id, self.clock())
        self._sessions[session.id] = session
        return session

    def _expire(self) -> None:
        horizon = self.clock() - self.ttl
        while self._sessions:
            oldest = next(iter(self._sessions.values()))
            if oldest.created > horizon:
                break
            self._sessions.popitem(last=False)

    @staticmethod
    def _challenge(session: UiaSession, flows: list[list[str]], params: Mapping[str, Any],
                   errcode: str | None = None, error: str | None = None) -> MatrixError:
        extra: dict[str, Any] = {
            "flows": [{"stages": flow} for flow in flows],
            "params": dict(params),
            "session": session.id,
            "completed": list(session.completed),
        }
        if errcode is None:
            return _UiaChallenge(extra)
        return MatrixError(401, errcode, error or "Authentication failed", **extra)


class _UiaChallenge(MatrixError):
    """The plain 401 asking for (more) stages: no errcode, just the flows."""

    def __init__(self, extra: dict[str, Any]) -> None:
        super().__init__(401, "", "", **extra)

    def to_json(self) -> dict[str, Any]:
        return dict(self.extra)
