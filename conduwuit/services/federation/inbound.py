"""Other servers acting on our rooms: joins, leaves, knocks, invites and transactions.

``make_*`` hands a remote server the unsigned template of a membership event on top of
our forward extremities, after checking with the auth rules against the current state
that the event would be allowed (so a refusal comes now, not after the round trip).
``send_*`` takes the signed event back and runs it through the same pipeline as any
inbound PDU (``Ingest.receive``); a join answers with the room's state before the join
and the auth chain, from which the joining server builds its copy of the room.

An invite for one of our users arrives before the room is ours: it is verified, signed
by us and kept as an outlier, with the invitee's membership ``invite`` and the stripped
state the inviting server sent, so that it shows in the user's ``/sync``.

``/send`` transactions are idempotent per (origin, txn id): the answer is stored and a
retry gets it back without anything being processed again. One origin's transactions
run one at a time; within a transaction the PDUs of each room go in order and rooms run
side by side.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
import orjson
import trio

from conduwuit.config import Config
from conduwuit.errors import MatrixError, bad_json, forbidden
from conduwuit.protocol import hashes, signing
from conduwuit.protocol.auth import AuthError, auth_types_for_event, check_auth
from conduwuit.protocol.canonical import CanonicalJsonError
from conduwuit.protocol.events import Event
from conduwuit.protocol.ids import server_name_of
from conduwuit.protocol.power_levels import PowerLevels
from conduwuit.protocol.room_versions import ROOM_VERSIONS, EventFormat, RoomVersion
from conduwuit.protocol.state_res.common import auth_chain
from conduwuit.services.notifier import Notifier
from conduwuit.services.rooms import Rooms
from conduwuit.services.rooms.events_db import encode_stored
from conduwuit.services.rooms.format import stripped_state
from conduwuit.services.rooms.membership import INVITE, JOIN, KNOCK, LEAVE
from conduwuit.services.rooms.state import CREATE, JOIN_RULES, POWER_LEVELS, StateMap
from conduwuit.services.rooms.timeline import STRIPPED_STATE, Draft
from conduwuit.services.server_keys import ServerKeys
from conduwuit.services.users import Users
from conduwuit.store import Store, from_u64_be, join, u64_be

from .edus import Edus, acl_allows, server_of
from .ingest import Ingest, PduRejected, parse_pdu

log = logging.getLogger(__name__)

MAX_PDUS = 50
MAX_EDUS = 100
TXN_TREE = "servertxnid_response"
# A sender retries a transaction for minutes to hours, never days: answers older than
# this are pruned (hourly) so the tree does not grow with every transaction ever received.
TXN_ANSWER_KEEP_MS = 24 * 3600 * 1000
TXN_PRUNE_INTERVAL_S = 3600.0
AUTHORISER = "join_authorised_via_users_server"
# A transaction's PDU whose room we cannot place still gets an answer; its id is
# guessed with the event format every room version from 4 on shares.
_GUESS_VERSION = ROOM_VERSIONS["11"]


def incompatible(version: RoomVersion) -> MatrixError:
    return MatrixError(400, "M_INCOMPATIBLE_ROOM_VERSION",
                       f"The room has version {version.identifier}, which the server asking "
                       "does not support", room_version=version.identifier)


def federation_pdu(event: Event) -> dict[str, Any]:
    """The PDU as other servers see it: our private bookkeeping in ``unsigned`` dropped."""
    return {k: v for k, v in event.pdu.items() if k != "unsigned"}


@attrs.define
class Inbound:
    config: Config
    store: Store
    keys: ServerKeys
    users: Users
    rooms: Rooms
    ingest: Ingest
    edus: Edus
    notifier: Notifier
    is_forbidden: Callable[[str], bool]
    _origin_locks: dict[str, trio.Lock] = attrs.field(factory=dict)

    @property
    def server_name(self) -> str:
        return self.config.server_name

    # --- shared checks ----------------------------------------------------------------

    def _resident_version(self, room_id: str) -> RoomVersion:
        """The room's version; 404 unless we hold the room and a local user is in it."""
        version = self.rooms.events.room_version(room_id)
        if version is None or self.rooms.state.current_hash(room_id) is None \
                or self.server_name not in self.rooms.membership.servers(room_id):
            raise MatrixError(404, "M_NOT_FOUND", "This server is not in that room")
        return version

    def _check_acl(self, room_id: str, origin: str) -> None:
        if not acl_allows(self.rooms, room_id, origin):
            raise forbidden("Your server is denied by the room's server ACL")

    # --- make_join / make_leave / make_knock -----------------------------------------

    def make_membership(self, origin: str, room_id: str, user_id: str, membership: str,
                        supported: Sequence[str] | None) -> dict[str, Any]:
        """The template of ``user_id``'s membership event, checked against current state.

        ``supported`` lists the room versions the asking server knows (``ver``); None
        for make_leave, which has no such parameter.
        """
        version = self._resident_version(room_id)
        if supported is not None and version.identifier not in supported:
            raise incompatible(version)
        if server_of(user_id) != origin:
            raise forbidden("The user does not belong to the server asking")
        self._check_acl(room_id, origin)
        state = self.rooms.state.current(room_id)
        content: dict[str, Any] = {"membership": membership}
        if membership == JOIN:
            authoriser = self._authoriser(room_id, user_id, version, state)
            if authoriser is not None:
                content[AUTHORISER] = authoriser
        pdu = self.rooms.timeline.template(room_id, version, state,
                                           Draft(user_id, "m.room.member", content, user_id))
        self._check_against(Event("$template", pdu, version), state)
        return {"room_version": version.identifier, "event": pdu}

    def _check_against(self, event: Event, state: StateMap) -> None:
        """403 unless the auth rules allow ``event`` against ``state``."""
        pairs = auth_types_for_event(event.type, event.state_key, event.sender, event.content,
                                     event.room_version)
        auth_state = self.rooms.state.events_of({p: state[p] for p in pairs if p in state})
        create = self.rooms.events.get(state[CREATE]) if CREATE in state else None
        try:
            check_auth(event, auth_state, create=create)
        except AuthError as refused:
            raise forbidden(f"Not allowed: {refused}") from None

    def _authoriser(self, room_id: str, user_id: str, version: RoomVersion,
                    state: StateMap) -> str | None:
        """For a restricted room: a local member who may invite, to vouch for the join.

        None when no vouching is needed (not restricted, or already invited or joined).
        """
        rules = self.rooms.events.get(state[JOIN_RULES]) if JOIN_RULES in state else None
        rule = rules.content.get("join_rule") if rules is not None else None
        restricted = (rule == "restricted" and version.restricted_join_rule) or (
            rule == "knock_restricted" and version.knock_restricted_join_rule)
        if not restricted or rules is None:
            return None
        if self.rooms.membership.membership(room_id, user_id) in (INVITE, JOIN):
            return None
        allow = rules.content.get("allow")
        allowed_rooms = [entry.get("room_id") for entry in allow
                         if isinstance(entry, Mapping) and entry.get("type") ==
                         "m.room_membership"] if isinstance(allow, list) else []
        if not any(isinstance(r, str) and self.rooms.membership.is_joined(r, user_id)
                   for r in allowed_rooms):
            raise MatrixError(400, "M_UNABLE_TO_AUTHORISE_JOIN",
                              "The user is not in any of the rooms that allow joining, as "
                              "far as this server knows")
        power = PowerLevels.from_state(
            self.rooms.events.get(state[POWER_LEVELS]) if POWER_LEVELS in state else None,
            self.rooms.events.get(state[CREATE]) if CREATE in state else None, version)
        for member in sorted(self.rooms.membership.joined_members(room_id)):
            if self.users.is_local(member) and power.user_level(member) >= power.invite:
                return member
        raise MatrixError(400, "M_UNABLE_TO_GRANT_JOIN",
                          "No user of this server may invite to the room")

    # --- send_join / send_leave / send_knock -----------------------------------------

    def _membership_event(self, origin: str, room_id: str, event_id: str, pdu: object,
                          version: RoomVersion, membership: str) -> Event:
        """The PDU of a ``send_*`` request, shaped and addressed as it must be."""
        if not isinstance(pdu, Mapping):
            raise bad_json("The body must be the signed membership event")
        try:
            event = parse_pdu(pdu, version)
        except PduRejected as bad:
            raise bad_json(f"Invalid event: {bad.reason}") from None
        if event.event_id != event_id:
            raise MatrixError(400, "M_INVALID_PARAM",
                              "The event id does not match the one in the path")
        if event.room_id != room_id:
            raise MatrixError(400, "M_INVALID_PARAM",
                              "The event's room does not match the one in the path")
        if event.type != "m.room.member" or event.membership != membership:
            raise MatrixError(400, "M_INVALID_PARAM", f"Not a {membership} event")
        if event.state_key != event.sender:
            raise MatrixError(400, "M_INVALID_PARAM", "The sender must be the member")
        if server_of(event.sender) != origin:
            raise forbidden("The member does not belong to the server sending the event")
        return event

    async def _accept(self, origin: str, room_id: str, pdu: Mapping[str, Any],
                      event_id: str) -> None:
        """Run the event through the inbound pipeline; 403 unless it entered the timeline."""
        _, error = await self.ingest.receive(origin, pdu)
        if error is not None:
            raise forbidden(f"The event was refused: {error}")
        if self.rooms.events.count_of(event_id) is None:
            raise forbidden("The event is not allowed by the room's current state")

    async def send_join(self, origin: str, room_id: str, event_id: str,
                        pdu: object) -> dict[str, Any]:
        version = self._resident_version(room_id)
        self._check_acl(room_id, origin)
        event = self._membership_event(origin, room_id, event_id, pdu, version, JOIN)
        signed = dict(event.pdu)
        authoriser = event.content.get(AUTHORISER)
        if isinstance(authoriser, str) and version.restricted_join_rule \
                and server_of(authoriser) == self.server_name:
            # We vouched for this join in make_join: our signature makes it valid (and the
            # joining server gets the countersigned copy back).
            if not self.users.is_local(authoriser):
                raise forbidden("The authorising user is not one of ours")
            signed = signing.sign_event(signed, self.server_name, self.keys.key, version)
        await self._accept(origin, room_id, signed, event_id)
        before = self._state_before(event)
        chain = auth_chain([*before.values(), event_id], self.rooms.events.get)
        return {
            "origin": self.server_name,
            "event": signed,
            "state": self._pdus(before.values()),
            "auth_chain": self._pdus(sorted(chain)),
            "members_omitted": False,
            "servers_in_room": sorted(self.rooms.membership.servers(room_id)),
        }

    def _state_before(self, event: Event) -> StateMap:
        """The room state the (accepted) event was checked against, without the event."""
        prevs = event.prev_event_ids
        if len(prevs) == 1:
            at_prev = self.rooms.state.after(prevs[0])
            if at_prev is not None:
                return dict(at_prev)
        after = dict(self.rooms.state.after(event.event_id) or {})
        after.pop(event.state_pair, None)
        for auth_id in event.auth_event_ids:  # the member's previous membership
            auth = self.rooms.events.get(auth_id)
            if auth is not None and auth.is_state and auth.state_pair == event.state_pair:
                after[event.state_pair] = auth_id
        return after

    def _pdus(self, event_ids: Any) -> list[dict[str, Any]]:
        events = (self.rooms.events.get(i) for i in event_ids)
        return [federation_pdu(e) for e in events if e is not None]

    async def send_leave(self, origin: str, room_id: str, event_id: str, pdu: object) -> None:
        version = self._resident_version(room_id)
        self._check_acl(room_id, origin)
        event = self._membership_event(origin, room_id, event_id, pdu, version, LEAVE)
        await self._accept(origin, room_id, event.pdu, event_id)

    async def send_knock(self, origin: str, room_id: str, event_id: str,
                         pdu: object) -> dict[str, Any]:
        version = self._resident_version(room_id)
        if not version.knock_join_rule:
            raise incompatible(version)
        self._check_acl(room_id, origin)
        event = self._membership_event(origin, room_id, event_id, pdu, version, KNOCK)
        await self._accept(origin, room_id, event.pdu, event_id)
        state = self.rooms.state.current(room_id)
        shown = self.rooms.state.events_of({p: state[p] for p in STRIPPED_STATE if p in state})
        stripped = [stripped_state(e) for e in shown.values()]
        # knock_state_events: the name before the spec settled on knock_room_state.
        return {"knock_room_state": stripped, "knock_state_events": stripped}

    # --- invites ---------------------------------------------------------------------

    async def invite(self, origin: str, room_id: str, event_id: str, pdu: object,
                     room_version: object, invite_room_state: object) -> dict[str, Any]:
        """Another server invites one of our users: checked, signed by us and kept."""
        version = ROOM_VERSIONS.get(room_version) if isinstance(room_version, str) else None
        if version is None:
            raise MatrixError(400, "M_INCOMPATIBLE_ROOM_VERSION",
                              f"This server does not support room version {room_version!r}",
                              room_version=str(room_version))
        if not isinstance(pdu, Mapping):
            raise bad_json("'event' must be the invite event")
        stripped_in = _stripped_list(invite_room_state)
        try:
            event = parse_pdu(pdu, version)
        except PduRejected as bad:
            raise bad_json(f"Invalid event: {bad.reason}") from None
        if event.event_id != event_id or event.room_id != room_id:
            raise MatrixError(400, "M_INVALID_PARAM",
                              "The event does not match the room and event ids of the path")
        if event.type != "m.room.member" or event.membership != INVITE \
                or event.state_key is None:
            raise MatrixError(400, "M_INVALID_PARAM", "Not an invite event")
        invitee = event.state_key
        if server_of(event.sender) != origin:
            raise forbidden("The inviter does not belong to the server sending the invite")
        room_server = _server_of_room(room_id)
        if room_server is not None and self.is_forbidden(room_server):
            raise forbidden("This server does not take part in rooms of that server")
        if not self.users.is_local(invitee):
            raise forbidden("The invited user is not a user of this server")
        if self.rooms.moderation.is_banned(room_id):
            raise forbidden("This room is banned on this homeserver")
        if not self.users.is_active(invitee):
            raise MatrixError(404, "M_NOT_FOUND", "The invited user does not exist")
        if self.config.block_non_admin_invites and not self.users.is_admin(invitee):
            raise forbidden("This server does not allow room invites")
        resident = self.rooms.state.current_hash(room_id) is not None
        if resident:
            self._check_acl(room_id, origin)
        try:
            verified = await self.ingest.verify(pdu, version)
        except PduRejected as bad:
            raise forbidden(f"The invite event does not verify: {bad.reason}") from None
        if resident:
            self._check_against(verified, self.rooms.state.current(room_id))
        signed = signing.sign_event(verified.pdu, self.server_name, self.keys.key, version)
        invite = Event(event_id, signed, version)
        self._store_invite(room_id, invitee, invite, [*stripped_in, stripped_state(invite)])
        return {"event": signed}

    def _store_invite(self, room_id: str, invitee: str, invite: Event,
                      stripped: list[dict[str, Any]]) -> None:
        """The invite as an outlier and the invitee's membership, in one batch."""
        count = self.store.next_count()
        with self.store.batch() as batch:
            if self.rooms.events.count_of(invite.event_id) is None:
                batch.put("eventid_outlierpdu", invite.event_id.encode(),
                          encode_stored(invite.event_id, dict(invite.pdu), invite.room_version))
            self.rooms.membership.stage(batch, room_id, invitee, INVITE, count, stripped)
        self.rooms.events.forget(invite.event_id)
        self.notifier.notify_user(invitee)

    # --- transactions ----------------------------------------------------------------

    async def transaction(self, origin: str, txn_id: str, body: object) -> dict[str, Any]:
        """``PUT /send/{txnId}``: ``{"pdus": {event_id: {} or {"error": ...}}}``."""
        if not isinstance(body, Mapping):
            raise bad_json("The transaction must be a JSON object")
        claimed = body.get("origin")
        if claimed is not None and claimed != origin:
            raise forbidden("The transaction's origin is not the server that sent it")
        pdus, edus = body.get("pdus", []), body.get("edus", [])
        if not isinstance(pdus, list) or not isinstance(edus if edus is not None else [], list):
            raise bad_json("'pdus' and 'edus' must be lists")
        edus = edus or []
        if len(pdus) > MAX_PDUS or len(edus) > MAX_EDUS:
            raise bad_json(f"A transaction holds at most {MAX_PDUS} PDUs and {MAX_EDUS} EDUs")
        key = join(origin, txn_id)
        lock = self._origin_locks.setdefault(origin, trio.Lock())
        try:
            async with lock:
                stored = self.store.tree(TXN_TREE).get(key)
                if stored is not None:
                    answer: dict[str, Any] = orjson.loads(stored[8:])
                    return answer
                answer = {"pdus": await self._pdus_of(origin, pdus)}
                for edu in edus:
                    self._apply_edu(origin, edu)
                # One fsync for the whole transaction, before the sender hears "done".
                await trio.to_thread.run_sync(self.store.flush)
                self.store.tree(TXN_TREE).put(key, u64_be(_now_ms()) + orjson.dumps(answer))
                return answer
        finally:
            stats = lock.statistics()
            if not stats.locked and stats.tasks_waiting == 0:
                self._origin_locks.pop(origin, None)

    def prune_transactions(self, older_than_ms: int) -> int:
        """Drop stored /send answers written before ``older_than_ms``; returns how many.

        A full scan of a small-valued tree: run it in a worker thread.
        """
        tree = self.store.tree(TXN_TREE)
        stale = [key for key, value in tree.iter() if from_u64_be(value[:8]) < older_than_ms]
        for start in range(0, len(stale), 1000):
            with self.store.batch() as batch:
                for key in stale[start:start + 1000]:
                    batch.delete(TXN_TREE, key)
        return len(stale)

    async def prune_transactions_forever(self) -> None:
        """The ``federation/txn-prune`` job."""
        while True:
            cutoff = _now_ms() - TXN_ANSWER_KEEP_MS
            pruned = await trio.to_thread.run_sync(self.prune_transactions, cutoff)
            if pruned:
                log.info("pruned %d stored answers of inbound transactions", pruned)
            await trio.sleep(TXN_PRUNE_INTERVAL_S)

    async def _pdus_of(self, origin: str, pdus: list[Any]) -> dict[str, dict[str, str]]:
        results: dict[str, dict[str, str]] = {}
        by_room: dict[str, list[Mapping[str, Any]]] = {}
        for pdu in pdus:
            room_id = pdu.get("room_id") if isinstance(pdu, Mapping) else None
            if not isinstance(room_id, str):
                log.info("PDU without a room id from %s dropped", origin)
                continue
            by_room.setdefault(room_id, []).append(pdu)

        async def one_room(room_id: str, room_pdus: list[Mapping[str, Any]]) -> None:
            allowed = acl_allows(self.rooms, room_id, origin)
            disabled = self.rooms.moderation.federation_disabled(room_id)
            for pdu in room_pdus:
                error: str | None
                if disabled:
                    event_id, error = _guess_id(self.rooms, pdu), "federation of this room is " \
                        "disabled on this server"
                elif not allowed:
                    event_id, error = _guess_id(self.rooms, pdu), "server denied by room ACL"
                else:
                    event_id, error = await self._receive(origin, pdu)
                if event_id is not None:
                    results[event_id] = {} if error is None else {"error": error}

        async with trio.open_nursery() as nursery:
            for room_id, room_pdus in by_room.items():
                nursery.start_soon(one_room, room_id, room_pdus)
        return results

    async def _receive(self, origin: str, pdu: Mapping[str, Any]) -> tuple[str | None,
                                                                          str | None]:
        try:
            event_id, error = await self.ingest.receive(origin, pdu, durable=False)
        except Exception:  # one bad PDU must not fail the transaction (nor be retried)
            log.exception("PDU from %s failed", origin)
            event_id, error = None, "internal error while processing the event"
        return event_id or _guess_id(self.rooms, pdu), error

    def _apply_edu(self, origin: str, edu: object) -> None:
        try:
            self.edus.apply(origin, edu)
        except Exception:  # an EDU never fails the transaction
            log.exception("EDU from %s failed", origin)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _stripped_list(value: object) -> list[dict[str, Any]]:
    """``invite_room_state`` as sent, keeping only entries of the stripped-state shape."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise bad_json("'invite_room_state' must be a list")
    kept = []
    for entry in value:
        if isinstance(entry, Mapping) and isinstance(entry.get("type"), str) \
                and isinstance(entry.get("state_key"), str) \
                and isinstance(entry.get("content"), Mapping):
            kept.append({k: entry[k] for k in ("type", "state_key", "content", "sender")
                         if k in entry})
    return kept


def _guess_id(rooms: Rooms, pdu: Mapping[str, Any]) -> str | None:
    """A PDU's event id for the answer, computed without verifying anything."""
    room_id = pdu.get("room_id")
    version = rooms.events.room_version(room_id) if isinstance(room_id, str) else None
    if isinstance(pdu.get("event_id"), str) and (
            version is None or version.event_format is EventFormat.V1):
        return str(pdu["event_id"])
    try:
        cleaned = {k: v for k, v in pdu.items() if k not in ("event_id", "unsigned")}
        return hashes.event_id_for(cleaned, version or _GUESS_VERSION)
    except (KeyError, TypeError, ValueError, CanonicalJsonError):
        return None


def _server_of_room(room_id: str) -> str | None:
    """The server part of a room id (v12 room ids have none)."""
    try:
        return server_name_of(room_id)
    except ValueError:
        return None
