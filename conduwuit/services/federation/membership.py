"""Our users' membership in rooms that live on other servers.

* join: ``make_join`` (offering every room version we support) then ``send_join`` v2
  through candidate servers in turn; the answer's state and auth chain go through
  ``Ingest.import_join``, after which the room is resident here;
* leave (rejecting a remote invite, retracting a knock): ``make_leave``/``send_leave``
  v2; the leave is recorded here even if no server could be reached (as conduwuit
  does), since the user asked to be rid of the invite;
* knock: ``make_knock``/``send_knock``; the room state the server shows goes to the
  user's stripped state, so ``/sync`` lists the room under ``knock``;
* invites of users of other servers: ``/invite`` v2 to the invitee's server, which
  countersigns the event before we persist it (``Timeline.send(countersign=...)``).

The candidate loop keeps conduwuit's limits: it stops after 15 servers answered that
they cannot use any of our room versions, or after 50 servers failed.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import quote

import attrs

from conduwuit.config import Config
from conduwuit.errors import MatrixError
from conduwuit.protocol import hashes, signing
from conduwuit.protocol.canonical import CanonicalJsonError
from conduwuit.protocol.events import Event
from conduwuit.protocol.ids import server_name_of
from conduwuit.protocol.room_versions import ROOM_VERSIONS, EventFormat, RoomVersion
from conduwuit.services.rooms import Rooms
from conduwuit.services.rooms.events_db import encode_stored
from conduwuit.services.rooms.format import stripped_state
from conduwuit.services.rooms.membership import INVITE, JOIN, KNOCK, LEAVE
from conduwuit.services.rooms.state import CREATE
from conduwuit.services.rooms.timeline import STRIPPED_STATE, Countersign
from conduwuit.services.server_keys import ServerKeys

from .client import FederationClient, FederationError, RemoteError, path_segment
from .ingest import Ingest, PduRejected, parse_pdu
from .keys import ServerSigningKeys
from .queries import Queries, remote_failure

log = logging.getLogger(__name__)

FEDERATION = "/_matrix/federation"
# conduwuit's limits on trying servers in turn.
MAX_INCOMPATIBLE = 15
MAX_FAILED = 50
VERSION_ERRORS = ("M_UNSUPPORTED_ROOM_VERSION", "M_INCOMPATIBLE_ROOM_VERSION")
AUTHORISER = "join_authorised_via_users_server"
# Template fields we never take over: ours are computed afresh.
_DROPPED = ("event_id", "hashes", "signatures", "unsigned", "age_ts")

T = TypeVar("T")
MembershipChanged = Callable[[str], None]


class BadAnswer(Exception):
    """A server answered, but not with something we can use."""


@attrs.define
class RemoteMembership:
    config: Config
    client: FederationClient
    server_keys: ServerKeys
    keys: ServerSigningKeys
    queries: Queries
    ingest: Ingest
    rooms: Rooms
    # Called with a local user id whose membership changed outside the timeline
    # (services/__init__.py adds the sync notifier).
    on_change: list[MembershipChanged] = attrs.field(factory=list)

    @property
    def server_name(self) -> str:
        return self.config.server_name

    # --- candidates ------------------------------------------------------------------

    async def resolve_alias(self, alias: str) -> tuple[str, list[str]]:
        answer = await self.queries.resolve_alias(alias)
        return str(answer["room_id"]), [str(s) for s in answer["servers"]]

    def candidates(self, room_id: str, user_id: str, servers: Sequence[str]) -> list[str]:
        """``servers`` first, then the inviter's server and the other senders of the
        user's stripped state, servers we saw in the room, the room id's server."""
        found: list[str] = list(servers)
        stripped = self.rooms.membership.stripped_state(user_id, room_id)
        inviters = [e.get("sender") for e in stripped if e.get("type") == "m.room.member"
                    and e.get("state_key") == user_id]
        senders = [e.get("sender") for e in stripped]
        found.extend(_server(s) for s in [*inviters, *senders] if isinstance(s, str))
        found.extend(self.rooms.membership.servers(room_id))
        found.append(_server(room_id))
        out: list[str] = []
        for server in found:
            if server and server != self.server_name and server not in out \
                    and not self.client.is_forbidden(server):
                out.append(server)
        return out

    async def _through(self, servers: Sequence[str], what: str,
                       attempt: Callable[[str], Awaitable[T]]) -> T:
        """The first server's answer that works; conduwuit's limits on trying."""
        if not self.config.allow_federation:
            raise MatrixError(403, "M_FORBIDDEN", "Federation is disabled on this server")
        incompatible = 0
        reasons: list[str] = []
        refused: MatrixError | None = None
        for failed, server in enumerate(servers, 1):
            try:
                return await attempt(server)
            except RemoteError as exc:
                reasons.append(f"{server}: {exc.status} {exc.errcode} {exc.error}".rstrip())
                if exc.errcode in VERSION_ERRORS:
                    incompatible += 1
                elif exc.status == 403:
                    # Non-resident servers say 403 too ("not in room"): try the others,
                    # and pass the refusal on only if no one helps.
                    refused = MatrixError(403, "M_FORBIDDEN",
                                          exc.error or f"{server} refused {what}")
            except (FederationError, BadAnswer, PduRejected) as exc:
                reasons.append(f"{server}: {exc}")
            log.info("%s through %s failed: %s", what, server, reasons[-1])
            if incompatible >= MAX_INCOMPATIBLE or failed >= MAX_FAILED:
                break
        if refused is not None:
            raise refused
        detail = "; ".join(reasons[:5]) if reasons else "no server to ask"
        raise MatrixError(404, "M_NOT_FOUND", f"No server could help with {what} ({detail})")

    # --- join ------------------------------------------------------------------------

    async def join(self, room_id: str, user_id: str, content: dict[str, Any],
                   servers: Sequence[str]) -> None:
        async def attempt(server: str) -> None:
            await self._join_through(server, room_id, user_id, content)
        await self._through(servers, "joining the room", attempt)

    async def _join_through(self, server: str, room_id: str, user_id: str,
                            content: dict[str, Any]) -> None:
        path = f"{FEDERATION}/v1/make_join/{path_segment(room_id)}/{path_segment(user_id)}"
        answer = await self.client.request("GET", server, path + _versions_query(ROOM_VERSIONS))
        version, template = _template(answer)
        event = self._complete(template, version, room_id, user_id, JOIN, content)
        answer = await self.client.request(
            "PUT", server,
            f"{FEDERATION}/v2/send_join/{path_segment(room_id)}/{path_segment(event.event_id)}",
            body=dict(event.pdu))
        if not isinstance(answer, dict):
            raise BadAnswer("send_join answer is not an object")
        state, auth_chain = answer.get("state"), answer.get("auth_chain")
        if not (isinstance(state, list) and isinstance(auth_chain, list)):
            raise BadAnswer("send_join answer lacks state or auth_chain")
        returned = answer.get("event")
        if isinstance(returned, dict):
            # A restricted join countersigned by the resident server: the same event,
            # with the authorising server's signature added.
            signed = await self.ingest.verify(returned, version)
            if signed.event_id != event.event_id:
                raise BadAnswer("send_join returned a different event")
            event = signed
        await self.ingest.import_join(server, room_id, version, event,
                                      [p for p in state if isinstance(p, dict)],
                                      [p for p in auth_chain if isinstance(p, dict)])
        log.info("%s joined %s through %s", user_id, room_id, server)

    # --- leave -----------------------------------------------------------------------

    async def leave(self, room_id: str, user_id: str, content: dict[str, Any]) -> None:
        servers = self.candidates(room_id, user_id, ())

        async def attempt(server: str) -> Event:
            return await self._leave_through(server, room_id, user_id, content)
        try:
            event: Event | None = await self._through(servers, "leaving the room", attempt)
        except MatrixError as failed:
            # The user wants the invite gone: record the leave here regardless.
            log.warning("leaving %s for %s over federation failed (%s); left locally",
                        room_id, user_id, failed.error)
            event = None
        self.record_membership(room_id, user_id, LEAVE, event, None)

    async def _leave_through(self, server: str, room_id: str, user_id: str,
                             content: dict[str, Any]) -> Event:
        path = f"{FEDERATION}/v1/make_leave/{path_segment(room_id)}/{path_segment(user_id)}"
        answer = await self.client.request("GET", server, path)
        version, template = _template(answer, self._known_version(room_id, user_id))
        event = self._complete(template, version, room_id, user_id, LEAVE, content)
        await self.client.request(
            "PUT", server,
            f"{FEDERATION}/v2/send_leave/{path_segment(room_id)}/{path_segment(event.event_id)}",
            body=dict(event.pdu))
        return event

    # --- knock -----------------------------------------------------------------------

    async def knock(self, room_id: str, user_id: str, content: dict[str, Any],
                    servers: Sequence[str]) -> None:
        async def attempt(server: str) -> tuple[Event, list[dict[str, Any]]]:
            return await self._knock_through(server, room_id, user_id, content)
        event, shown = await self._through(servers, "knocking on the room", attempt)
        self.record_membership(room_id, user_id, KNOCK, event, [*shown, stripped_state(event)])

    async def _knock_through(self, server: str, room_id: str, user_id: str,
                             content: dict[str, Any]) -> tuple[Event, list[dict[str, Any]]]:
        path = f"{FEDERATION}/v1/make_knock/{path_segment(room_id)}/{path_segment(user_id)}"
        knockable = {k: v for k, v in ROOM_VERSIONS.items() if v.knock_join_rule}
        answer = await self.client.request("GET", server, path + _versions_query(knockable))
        version, template = _template(answer)
        if not version.knock_join_rule:
            raise BadAnswer(f"room version {version.identifier} has no knocking")
        event = self._complete(template, version, room_id, user_id, KNOCK, content)
        answer = await self.client.request(
            "PUT", server,
            f"{FEDERATION}/v1/send_knock/{path_segment(room_id)}/{path_segment(event.event_id)}",
            body=dict(event.pdu))
        shown = answer.get("knock_room_state", answer.get("knock_state_events")) \
            if isinstance(answer, dict) else None
        if not isinstance(shown, list):
            raise BadAnswer("send_knock answer lacks knock_room_state")
        return event, [s for s in (_stripped(e) for e in shown) if s is not None]

    # --- invites of remote users -----------------------------------------------------

    def invite_countersign(self, room_id: str, target: str) -> Countersign:
        async def countersign(event: Event) -> Event:
            return await self._send_invite(room_id, target, event)
        return countersign

    async def _send_invite(self, room_id: str, target: str, event: Event) -> Event:
        server = _server(target)
        body = {"event": dict(event.pdu), "room_version": event.room_version.identifier,
                "invite_room_state": self._invite_state(room_id, event)}
        path = (f"{FEDERATION}/v2/invite/{path_segment(room_id)}/"
                f"{path_segment(event.event_id)}")
        try:
            answer = await self.client.request("PUT", server, path, body=body)
        except RemoteError as exc:
            raise MatrixError(403, "M_FORBIDDEN", f"{server} refused the invite: "
                              f"{exc.error or exc.errcode}") from None
        except FederationError as exc:
            raise remote_failure(exc, "Invite") from None
        returned = answer.get("event") if isinstance(answer, dict) else None
        try:
            return await self._countersigned(event, returned, server)
        except BadAnswer as bad:
            raise MatrixError(502, "M_UNKNOWN",
                              f"{server} answered the invite wrongly: {bad}") from None

    def _invite_state(self, room_id: str, event: Event) -> list[dict[str, Any]]:
        """Stripped state for the invitee: the usual events and the inviter's member event."""
        current = self.rooms.state.current(room_id)
        pairs = [*STRIPPED_STATE, ("m.room.member", event.sender)]
        shown = self.rooms.state.events_of({p: current[p] for p in pairs if p in current})
        return [stripped_state(e) for e in shown.values()]

    async def _countersigned(self, ours: Event, returned: object, server: str) -> Event:
        """The invitee's copy, if it is our event with our signature and theirs."""
        if not isinstance(returned, dict):
            raise BadAnswer("no event in the answer")
        theirs = {k: v for k, v in returned.items() if k != "unsigned"}
        if _unsigned_part(theirs) != _unsigned_part(ours.pdu):
            raise BadAnswer("the event came back changed")
        version = ours.room_version
        signatures = theirs.get("signatures")
        if not isinstance(signatures, dict):
            raise BadAnswer("the event came back without signatures")
        key = self.server_keys.key
        try:
            signing.verify_event(theirs, self.server_name, signing.key_id(key),
                                 signing.verify_key_base64(key), version)
        except signing.SignatureError:
            raise BadAnswer("our signature no longer verifies") from None
        by_server = signatures.get(server)
        key_ids = [k for k in by_server if isinstance(k, str)] \
            if isinstance(by_server, dict) else []
        if not key_ids:
            raise BadAnswer(f"the event is not signed by {server}")
        known = await self.keys.keys_for(server, key_ids)
        for key_id in key_ids:
            verify_key = known.get(key_id)
            if verify_key is None:
                continue
            try:
                signing.verify_event(theirs, server, key_id, verify_key.key, version)
            except signing.SignatureError:
                continue
            return Event(ours.event_id, theirs, version)
        raise BadAnswer(f"the signature of {server} does not verify")

    # --- building and recording ------------------------------------------------------

    def _complete(self, template: Mapping[str, Any], version: RoomVersion, room_id: str,
                  user_id: str, membership: str, content: Mapping[str, Any]) -> Event:
        """Our signed membership event from a make_* template."""
        if (template.get("type"), template.get("state_key"), template.get("sender")) != \
                ("m.room.member", user_id, user_id):
            raise BadAnswer("the template is not our membership event")
        if template.get("room_id") != room_id:
            raise BadAnswer("the template is for another room")
        offered = template.get("content")
        offered = offered if isinstance(offered, dict) else {}
        if offered.get("membership", membership) != membership:
            raise BadAnswer(f"the template is not a {membership}")
        pdu = {k: v for k, v in template.items() if k not in _DROPPED}
        pdu["content"] = dict(content)
        if membership == JOIN and isinstance(offered.get(AUTHORISER), str):
            pdu["content"][AUTHORISER] = offered[AUTHORISER]
        pdu["origin_server_ts"] = int(time.time() * 1000)
        if version.updated_redaction_rules:
            pdu.pop("origin", None)
        else:
            pdu["origin"] = self.server_name
        if version.event_format is EventFormat.V1:
            pdu["event_id"] = f"${secrets.token_urlsafe(18)}:{self.server_name}"
        try:
            signed = signing.sign_event(hashes.with_content_hash(pdu), self.server_name,
                                        self.server_keys.key, version)
            return parse_pdu(signed, version)  # the shape its room version requires
        except (CanonicalJsonError, TypeError, ValueError) as bad:
            raise BadAnswer(f"unusable template: {bad}") from None

    def record_membership(self, room_id: str, user_id: str, membership: str,
                          event: Event | None, stripped: list[dict[str, Any]] | None) -> None:
        """A membership of a local user in a room we are not in (invite, knock, leave):
        the event as an outlier and the membership indexes, in one batch; then /sync
        is woken. The inbound /invite handler can use this for invites too."""
        store = self.rooms.timeline.store
        count = store.next_count()
        with store.batch(sync=True) as batch:
            if event is not None:
                batch.put("eventid_outlierpdu", event.event_id.encode(),
                          encode_stored(event.event_id, dict(event.pdu), event.room_version))
            self.rooms.membership.stage(batch, room_id, user_id, membership, count,
                                        stripped if membership in (INVITE, KNOCK) else None)
        for callback in self.on_change:
            callback(user_id)

    def _known_version(self, room_id: str, user_id: str) -> RoomVersion:
        """For old make_leave answers without room_version: ours, or the invite's."""
        known = self.rooms.events.room_version(room_id)
        if known is not None:
            return known
        for shown in self.rooms.membership.stripped_state(user_id, room_id):
            if (shown.get("type"), shown.get("state_key")) == CREATE:
                content = shown.get("content")
                identifier = content.get("room_version", "1") if isinstance(content, dict) \
                    else "1"
                found = ROOM_VERSIONS.get(str(identifier))
                if found is not None:
                    return found
        return ROOM_VERSIONS["1"]


def _server(identifier: str) -> str:
    try:
        return server_name_of(identifier) or ""
    except ValueError:
        return ""


def _versions_query(versions: Mapping[str, RoomVersion]) -> str:
    """``?ver=1&ver=2...``: repeated parameters, which a query mapping cannot hold."""
    return "?" + "&".join(f"ver={quote(v, safe='')}" for v in versions)


def _template(answer: Any, default: RoomVersion | None = None,
              ) -> tuple[RoomVersion, Mapping[str, Any]]:
    """(room version, event template) of a make_join/make_leave/make_knock answer."""
    if not isinstance(answer, dict) or not isinstance(answer.get("event"), dict):
        raise BadAnswer("no event template in the answer")
    identifier = answer.get("room_version")
    if identifier is None:
        # Servers before room versions existed did not say; v1 then.
        return default or ROOM_VERSIONS["1"], answer["event"]
    version = ROOM_VERSIONS.get(identifier) if isinstance(identifier, str) else None
    if version is None:
        raise BadAnswer(f"room version {identifier!r} is not supported here")
    return version, answer["event"]


def _stripped(shown: object) -> dict[str, Any] | None:
    if not isinstance(shown, dict) or not isinstance(shown.get("type"), str) \
            or not isinstance(shown.get("content"), dict):
        return None
    out = {"type": shown["type"], "state_key": str(shown.get("state_key", "")),
           "content": shown["content"]}
    if isinstance(shown.get("sender"), str):
        out["sender"] = shown["sender"]
    return out


def _unsigned_part(pdu: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in pdu.items() if k not in ("signatures", "unsigned")}
