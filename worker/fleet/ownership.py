"""Which library of a pool owns each pool destination, as one library sees the fleet (pure).

Theory of operation. Every library of a pool receives every destination of the pool
on its own persistent session and holds it (journaled, "watched") until some library
claims it. The owner of an unclaimed destination is the first of the pool's live
members in a rendezvous ranking of its event id: every library computes the same
owner from the same members without talking to the others, and when a member goes,
only its own destinations change owner (each to the next member of its ranking).

Members announce themselves, retained, on `<prefix>/pool-members/<library>` once
their pool subscriptions are in place (so a member never owns what it cannot
receive); their pool connection's last will says they are gone.

Views can differ for a moment (a will on its way, a member restarting), so two
libraries may both claim one destination. The claim decides: all claims of a
destination travel on one topic, which one broker delivers to every subscriber in
the same order, so *the first claim seen since the topic was empty wins* for every
library alike. A library applies what it claimed only once its own claim came back
as the first; a loser had applied nothing. A winner that sees a later claim on its
topic publishes its own again (once), so that the retained claim (what a library starting
later sees) is the winner's.

Nothing here does I/O or reads a clock: worker/intake/pools.py feeds it what arrives
and does what it answers.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from worker.fleet.routing import Claim


def members_topic(prefix: str, library_id: str) -> str:
    """Where a library announces (retained) the pools it takes destinations of."""
    return f"{prefix}/pool-members/{library_id}"


def members_subscription(prefix: str) -> str:
    return f"{prefix}/pool-members/+"


@dataclass(frozen=True, slots=True)
class Member:
    """A library's announcement: alive with its pools, or gone (its last will)."""

    library_id: str
    alive: bool
    pools: frozenset[str] = frozenset()
    #: Tells this connection's announcement from an older one of the same library.
    session: str | None = None

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "library_id": self.library_id,
                "alive": self.alive,
                "pools": sorted(self.pools),
                "session": self.session,
            }
        ).encode()


def parse_member(payload: bytes) -> Member | None:
    """An announcement from its retained message; None for a cleared or foreign one."""
    try:
        data = json.loads(payload)
        library = data["library_id"]
        pools = data.get("pools") or []
        session = data.get("session")
    except (ValueError, KeyError, TypeError):
        return None
    well_formed = (
        isinstance(library, str)
        and isinstance(pools, list)
        and all(isinstance(p, str) for p in pools)
        and (session is None or isinstance(session, str))
    )
    if not well_formed:
        return None
    return Member(library, data.get("alive") is True, frozenset(pools), session)


def rank(key: str, libraries: Iterable[str]) -> list[str]:
    """The libraries in the rendezvous order of `key`: the first one owns it."""

    def weight(library: str) -> bytes:
        return hashlib.sha256(f"{key}\0{library}".encode()).digest()

    return sorted(set(libraries), key=lambda library: (weight(library), library), reverse=True)


@dataclass(frozen=True, slots=True)
class Watch:
    """A pool destination held until it is claimed."""

    event_id: str
    pool: str
    destination_id: int


@dataclass(frozen=True, slots=True)
class ClaimSeen:
    """What a claim arriving on a destination's claim topic means here.

    `winner`: the destination's first claim, after this one (None once cleared).
    `outcome`: `won` or `lost` when the claim is ours (apply it, or drop it);
    `reassert` when another library claimed a destination we had won (publish our
    claim again so that it is the retained one); `settled` otherwise.
    """

    winner: Claim | None
    outcome: Literal["won", "lost", "reassert", "settled"]


@dataclass
class Ownership:
    """The pool members, the first claims and the held destinations, as one library
    sees them; each method answers what the library must do now."""

    library_id: str
    #: The announcement of our current pool connection: until it comes back to us,
    #: our view of the members and claims is not complete and we own nothing.
    session: str | None = None
    members: dict[str, Member] = field(default_factory=dict)
    #: The first claim of each destination since its claim topic was last empty.
    claims: dict[int, Claim] = field(default_factory=dict)
    watched: dict[str, Watch] = field(default_factory=dict)
    ready: bool = False
    #: Destinations whose claim we published again, once each: two libraries whose
    #: histories differ (one restarted between a claim and its answer) must not
    #: answer each other's claims forever.
    reasserted: set[int] = field(default_factory=set)
    _by_destination: dict[int, set[str]] = field(default_factory=dict, repr=False)

    def connecting(self, session: str) -> None:
        """A new pool connection: own nothing until its announcement comes back."""
        self.session = session
        self.ready = False

    def leaving(self) -> None:
        """We withdrew from the pools: own nothing, announce nothing, until we reconnect."""
        self.session = None
        self.ready = False

    def live(self, pool: str) -> list[str]:
        """The libraries of the pool that are alive, as far as we know."""
        return sorted(m.library_id for m in self.members.values() if m.alive and pool in m.pools)

    def owner(self, watch: Watch) -> str | None:
        ranked = rank(watch.event_id, self.live(watch.pool))
        return ranked[0] if ranked else None

    def on_member(self, member: Member) -> tuple[bool, list[Watch]]:
        """Take an announcement in: (whether ours must be published again, the held
        destinations that are now ours to claim)."""
        self.members[member.library_id] = member
        if member.library_id == self.library_id:
            if member.alive and member.session is not None and member.session == self.session:
                self.ready = True
            elif self.ready and not member.alive:
                # A will of an earlier connection landed after our announcement.
                self.ready = False
                return True, []
        return False, self.ours()

    def on_claim(self, destination_id: int, claim: Claim | None) -> ClaimSeen:
        """Take a claim (None: the topic was emptied) in."""
        if claim is None:
            self.claims.pop(destination_id, None)
            self.reasserted.discard(destination_id)
            return ClaimSeen(None, "settled")
        first = self.claims.setdefault(destination_id, claim)
        mine = claim.library_id == self.library_id
        if first.library_id == self.library_id:
            if mine:
                return ClaimSeen(first, "won")
            if destination_id in self.reasserted:
                return ClaimSeen(first, "settled")
            self.reasserted.add(destination_id)
            return ClaimSeen(first, "reassert")
        return ClaimSeen(first, "lost" if mine else "settled")

    def is_ours(self, watch: Watch) -> bool:
        """Whether a destination nobody claimed is ours to claim now."""
        return (
            self.ready
            and watch.destination_id not in self.claims
            and self.owner(watch) == self.library_id
        )

    def watch(self, watch: Watch) -> bool:
        """Hold a destination; True when it is ours to claim now."""
        if watch.destination_id in self.claims:
            return False
        self.watched[watch.event_id] = watch
        self._by_destination.setdefault(watch.destination_id, set()).add(watch.event_id)
        return self.is_ours(watch)

    def forget(self, event_id: str) -> None:
        watch = self.watched.pop(event_id, None)
        if watch is not None:
            held = self._by_destination.get(watch.destination_id, set())
            held.discard(event_id)
            if not held:
                self._by_destination.pop(watch.destination_id, None)

    def settled(self, destination_id: int) -> list[Watch]:
        """The held destinations a claim settled (they are forgotten)."""
        found = [self.watched[e] for e in sorted(self._by_destination.get(destination_id, ()))]
        for watch in found:
            self.forget(watch.event_id)
        return found

    def ours(self) -> list[Watch]:
        """The held destinations nobody claimed whose owner we are now."""
        if not self.ready:
            return []
        return [
            w
            for w in self.watched.values()
            if w.destination_id not in self.claims and self.owner(w) == self.library_id
        ]
