"""Rooms: storage of events and state, the local write path, membership, aliases."""

from __future__ import annotations

import attrs

from conduwuit.config import Config
from conduwuit.services.profile import Profile
from conduwuit.services.server_keys import ServerKeys
from conduwuit.services.users import Users
from conduwuit.store import Store

from .actions import MembershipActions
from .aliases import Aliases
from .creation import RoomCreation
from .directory import Directory
from .events_db import EventStore
from .hierarchy import SpaceHierarchy
from .membership import Membership
from .moderation import RoomModeration
from .relations import Relations
from .room_directory import RoomDirectory
from .search import Search
from .serving import EventServing
from .short import ShortIds
from .state import RoomState
from .state_store import StateStore
from .summary import RoomSummaries
from .timeline import Timeline
from .upgrade import RoomUpgrade
from .visibility import Visibility


@attrs.define
class Rooms:
    short: ShortIds
    events: EventStore
    snapshots: StateStore
    state: RoomState
    membership: Membership
    timeline: Timeline
    aliases: Aliases
    directory: Directory
    creation: RoomCreation
    actions: MembershipActions
    serving: EventServing
    relations: Relations
    search: Search
    visibility: Visibility
    summaries: RoomSummaries
    room_directory: RoomDirectory
    hierarchy: SpaceHierarchy
    upgrade: RoomUpgrade
    moderation: RoomModeration

    @classmethod
    def build(cls, config: Config, store: Store, keys: ServerKeys, users: Users,
              profile: Profile) -> Rooms:
        short = ShortIds(store)
        events = EventStore(store, short)
        snapshots = StateStore(store)
        state = RoomState(store, short, snapshots, events)
        membership = Membership(store)
        timeline = Timeline(store, config.server_name, keys, short, events, state, snapshots,
                            membership)
        aliases = Aliases(store, config.server_name, list(config.forbidden_alias_names))
        directory = Directory(store)
        serving = EventServing(store, events)
        relations = Relations(store, short, events, serving)
        timeline.index_writers.append(relations.stage)
        serving.unsigned_providers.append(relations.unsigned)
        search = Search(store, short, events, state, membership)
        timeline.index_writers.append(search.stage)
        visibility = Visibility(short, snapshots, state, events, membership)
        summaries = RoomSummaries(state, events, membership, visibility)
        moderation = RoomModeration(store)
        actions = MembershipActions(config, users, profile, aliases, state, membership, timeline,
                                    moderation=moderation)
        room_directory = RoomDirectory(config, users, aliases, directory, events, state,
                                       membership, timeline, visibility, summaries)
        return cls(
            short=short, events=events, snapshots=snapshots, state=state,
            membership=membership, timeline=timeline, aliases=aliases, directory=directory,
            creation=RoomCreation(config, users, profile, timeline, aliases, directory, actions),
            actions=actions,
            serving=serving, relations=relations, search=search,
            visibility=visibility, summaries=summaries, room_directory=room_directory,
            hierarchy=SpaceHierarchy(state, summaries),
            upgrade=RoomUpgrade(profile, events, state, membership, timeline, aliases,
                                directory),
            moderation=moderation,
        )
