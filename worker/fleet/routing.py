"""Routing in a fleet with no router: which library applies a destination (pure).

Theory of operation. Every library receives every command on `<prefix>/tasks/...`
through its own persistent session: a destination naming a tape is applied by the
library that holds the tape, and the others journal it as *not ours*. A destination
naming only a pool is published on `<prefix>/pools/<pool>/tasks/...`, which the
libraries holding tapes of the pool read through one MQTT 5 shared subscription:
the broker hands each message to one member of the group. The member that takes it
first retains a *claim* (`<prefix>/pools/<pool>/claims/<id>`, the whole message in
it) and only then journals it; a member that cannot serve it publishes it again on
the pool topic with one more hand-off, until `max_hand_offs`, where it is failed
with every library's reason. Nothing here does I/O: the intake (worker/intake/pools.py)
asks, and does what the answer says.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from drivers.definition import LibraryDefinition
from drivers.media import can_write, media_of
from worker.errors import RejectedEventError

if TYPE_CHECKING:  # records only; the journal needs nothing from here
    from worker.state.journal import DriveRecord, TapeRecord

#: The MQTT 5 user properties a hand-off adds to the message it passes on.
HAND_OFFS = "hand-offs"
DECLINED = "declined"
#: A pool is one topic level, as the library definition names it.
_POOL_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")


def pool_commands(prefix: str, pool: str) -> str:
    """The topic under which the archive manager publishes one pool's destinations."""
    return f"{prefix}/pools/{pool}/tasks"


def pool_subscription(prefix: str, pool: str, group: str) -> str:
    """The shared subscription through which one library of the pool takes each."""
    return f"$share/{group}/{pool_commands(prefix, pool)}/#"


def hand_off_commands(prefix: str, pool: str, library_id: str) -> str:
    """Where a pool destination is handed to one library of the pool by name."""
    return f"{prefix}/pools/{pool}/libraries/{library_id}/tasks"


def hand_off_subscription(prefix: str, library_id: str) -> str:
    return f"{prefix}/pools/+/libraries/{library_id}/tasks/#"


def claim_topic(prefix: str, pool: str, destination_id: int) -> str:
    return f"{prefix}/pools/{pool}/claims/{destination_id}"


def claims_subscription(prefix: str) -> str:
    return f"{prefix}/pools/+/claims/+"


def routable_pool(name: str) -> bool:
    """Whether a pool's name can be a topic level (others cannot be routed by pool)."""
    return bool(_POOL_RE.fullmatch(name)) and name not in (".", "..")


def pools_held(definition: LibraryDefinition) -> tuple[str, ...]:
    """The pools whose destinations a library may take: tape pools it has tapes of."""
    held = {t.pool for t in definition.tapes if t.pool is not None}
    return tuple(
        p.name
        for p in definition.pools
        if p.content == "tape" and p.name in held and routable_pool(p.name)
    )


def split_pool_topic(prefix: str, topic: str) -> tuple[str, str]:
    """(pool, the same command's topic under `<prefix>/tasks/`) of a pool command, sent
    to the pool or handed to one of its libraries."""
    head = f"{prefix}/pools/"
    rest = topic[len(head) :] if topic.startswith(head) else ""
    pool, _, command = rest.partition("/")
    if command.startswith("libraries/"):
        _, library, command = command.split("/", 2) if command.count("/") >= 2 else ("", "", "")
        if not routable_pool(library):
            command = ""
    kind, _, command = command.partition("/")
    if not routable_pool(pool) or kind != "tasks" or not command:
        raise RejectedEventError(
            f"topic {topic[:200]!r} is not <prefix>/pools/<pool>/tasks/<task>/"
            "task_destinations/<id>/create"
        )
    return pool, f"{prefix}/tasks/{command}"


@dataclass(frozen=True, slots=True)
class Route:
    """How a library of a fleet treats one event (events of a lone library have none).

    `common`: read on `<prefix>/tasks/` by every library, so applied only if it is ours.
    `take` and `fail`: a pool command this library took (or fails, with `reason`).
    `pass`: a pool command this library journals without applying (handed on, or
    another library's), with `reason`.
    """

    library_id: str
    via: Literal["common", "take", "fail", "pass"]
    reason: str | None = None
    #: The fleet's topic prefix, for reasons that name a topic.
    prefix: str = "<prefix>"


def not_ours_barcode(barcode: str, library_id: str) -> str:
    return f"not ours: tape {barcode} is not in library {library_id}"


def not_ours_tape_id(tape_id: int, library_id: str) -> str:
    return f"not ours: tape_id {tape_id} is not in library {library_id}"


def not_ours_pool(pool: str, library_id: str) -> str:
    return f"not ours: library {library_id} did not take this destination of pool {pool!r}"


def pool_create_on_common_topic(prefix: str, pool: str) -> str:
    return (
        f"a destination naming only pool {pool!r} is created on "
        f"{pool_commands(prefix, pool)}/..., where one library of the pool takes it: "
        "on the common topic every library would"
    )


@dataclass(frozen=True, slots=True)
class HandOff:
    """How far a pool destination has travelled: hand-offs so far, and who declined why."""

    count: int = 0
    #: (library, reason) for each library that passed it on.
    declined: tuple[tuple[str, str], ...] = ()

    @property
    def libraries(self) -> set[str]:
        return {library for library, _ in self.declined}


def parse_hand_off(count: str | None, declined: str | None) -> HandOff:
    """The hand-off user properties of a message; RejectedEventError names the problem."""
    if count is None:
        return HandOff()
    if not count.isdigit() or len(count) > 4:
        raise RejectedEventError(f"{HAND_OFFS} {count[:32]!r} is not a small whole number")
    pairs: Any = []
    if declined:
        try:
            pairs = json.loads(declined)
        except ValueError:
            pairs = None
    well_formed = isinstance(pairs, list) and all(
        isinstance(p, list) and len(p) == 2 and all(isinstance(x, str) for x in p) for p in pairs
    )
    if not well_formed:
        raise RejectedEventError(f"{DECLINED} must be a JSON list of [library, reason] pairs")
    return HandOff(int(count), tuple((library, reason) for library, reason in pairs))


def hand_off_properties(hand_off: HandOff) -> list[tuple[str, str]]:
    pairs = [[library, reason[:500]] for library, reason in hand_off.declined]
    return [(HAND_OFFS, str(hand_off.count)), (DECLINED, json.dumps(pairs))]


def dedup_key(event_id: str, hand_off: HandOff) -> str:
    """Each hop of a hand-off is its own message: a library may meet it again."""
    base = f"mqtt:{event_id}"
    return base if hand_off.count == 0 else f"{base}#{hand_off.count}"


def why_not_here(
    pool: str,
    size_bytes: int | None,
    tapes: Iterable[TapeRecord],
    drives: Sequence[DriveRecord],
    *,
    draining: bool,
) -> str | None:
    """Why this library cannot serve a destination of the pool now, or None if it can.

    It can when some tape of the pool is writable, has room for what the destination
    declares (or any room), and a drive that is up can write it.
    """
    if draining:
        return "the library is draining"
    of_pool = [t for t in tapes if t.pool == pool and not t.cleaning]
    if not of_pool:
        return f"no tape of pool {pool!r}"
    generations = {d.generation for d in drives if d.up}
    if not generations:
        return "every drive is down"
    need = max(size_bytes or 0, 1)
    room = False
    for tape in of_pool:
        media = media_of(tape.barcode)
        unusable = tape.locked or tape.write_protected or tape.full or tape.need_to_check
        if media is None or unusable or tape.ejected:
            continue
        if media.capacity_bytes - tape.used_bytes < need:
            continue
        room = True
        if any(can_write(g, media) for g in generations):
            return None
    if not room:
        return f"no writable tape of pool {pool!r} with room for {need} bytes"
    return f"every drive that can write pool {pool!r} is down"


@dataclass(frozen=True, slots=True)
class Decision:
    kind: Literal["take", "hand_on", "fail", "not_ours"]
    reason: str | None = None
    #: For `hand_on`, what the passed-on message carries, and to which library.
    hand_off: HandOff | None = None
    to: str | None = None


def decide(
    library_id: str,
    pool: str,
    *,
    why_not: str | None,
    hand_off: HandOff,
    max_hand_offs: int,
    claimed_by: str | None,
    members: Iterable[str],
) -> Decision:
    """What this library does with a pool destination the broker handed it.

    `members` are the libraries of the pool the fleet view shows alive. A destination
    this library cannot serve goes by name to one that has not declined it yet, so
    that the hand-offs end after each member had its turn, or at `max_hand_offs`.
    """
    if claimed_by is not None and claimed_by != library_id:
        return Decision("not_ours", f"not ours: library {claimed_by} took it")
    if why_not is None:
        return Decision("take")
    declined = (*hand_off.declined, (library_id, why_not))
    passed = HandOff(hand_off.count + 1, declined)
    candidates = sorted(set(members) - passed.libraries)
    if not candidates or hand_off.count >= max_hand_offs:
        return Decision(
            "fail",
            f"no library of pool {pool!r} can serve it after {hand_off.count} hand-offs: "
            + "; ".join(f"{library}: {reason}" for library, reason in declined),
        )
    return Decision(
        "hand_on",
        f"handed on to library {candidates[0]} ({passed.count} of at most {max_hand_offs}): "
        f"{why_not}",
        passed,
        candidates[0],
    )


def next_hand_off(hand_off: HandOff, live: Iterable[str], *, gone: str) -> str | None:
    """Where a destination handed to a library that went before claiming it goes next:
    a live library of the pool that has not declined it, or None (it then waits for the
    gone library)."""
    candidates = sorted(set(live) - hand_off.libraries - {gone})
    return candidates[0] if candidates else None


def pool_members(summary: dict[str, Any]) -> tuple[str, set[str]] | None:
    """(library, the pools it holds tapes of) from a fleet summary; an empty set for a
    library that is gone; None for what is no summary."""
    library = summary.get("library_id")
    if not isinstance(library, str):
        return None
    pools = summary.get("pools") if summary.get("alive") is True else None
    return library, set(pools) if isinstance(pools, dict) else set()


@dataclass(frozen=True, slots=True)
class Claim:
    """A library's retained word that it took (or failed) one pool destination."""

    library_id: str
    destination_id: int
    status: Literal["taken", "failed"]
    #: The message as taken, so the library finds it again after a crash.
    topic: str
    payload: str
    event_id: str
    sequence: str | None
    hand_offs: int
    reason: str | None = None

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "library_id": self.library_id,
                "destination_id": self.destination_id,
                "status": self.status,
                "topic": self.topic,
                "payload": self.payload,
                "event_id": self.event_id,
                "sequence": self.sequence,
                "hand_offs": self.hand_offs,
                "reason": self.reason,
            }
        ).encode()


def parse_claim(payload: bytes) -> Claim | None:
    """A claim from its retained message; None for a cleared or foreign one."""
    try:
        data = json.loads(payload)
        claim = Claim(
            library_id=str(data["library_id"]),
            destination_id=int(data["destination_id"]),
            status="failed" if data["status"] == "failed" else "taken",
            topic=str(data["topic"]),
            payload=str(data["payload"]),
            event_id=str(data["event_id"]),
            sequence=None if data.get("sequence") is None else str(data["sequence"]),
            hand_offs=int(data.get("hand_offs") or 0),
            reason=None if data.get("reason") is None else str(data["reason"]),
        )
    except (ValueError, KeyError, TypeError):
        return None
    return claim
