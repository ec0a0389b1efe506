"""Is the daemon alive, is it ready, may the watchdog be pinged: one place decides."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from worker.ops.daemon import RunningDaemon

#: A planning loop that has not come round for this long is stuck (it ticks every second
#: and a round is milliseconds; robot moves run beside it, not in it).
STUCK_AFTER_S = 30.0
#: A journal that does not answer a trivial read in this long is stuck.
JOURNAL_ANSWER_S = 10.0


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    reason: str | None = None


async def readiness(service: RunningDaemon) -> list[Check]:
    """What /readyz reports: the journal takes writes, the library was inventoried,
    every enabled intake is connected, the planning loop comes round."""
    checks = [Check("journal", service.journal_fault is None, service.journal_fault)]
    journal = service.journal
    inventoried = journal is not None and await journal.has_inventory()
    in_flight = service.executor.in_flight if service.executor is not None else None
    if not inventoried:
        checks.append(Check("library", False, "the library has not been inventoried yet"))
    elif in_flight is not None and in_flight.needs_inventory:
        checks.append(Check("library", False, "an uncertain move: the library is re-inventoried"))
    else:
        checks.append(Check("library", True))
    if service.settings.mqtt.host:
        connected = service.mqtt is not None and service.mqtt.connected.is_set()
        reason = None if connected else f"not connected to {service.settings.mqtt.host}"
        checks.append(Check("mqtt", connected, reason))
    if service.settings.fleet.routing:
        # Without it the library takes none of its pools' destinations.
        pools = service.pools is not None and service.pools.connected.is_set()
        reason = None if pools else "the pool intake is not connected"
        checks.append(Check("pools", pools, reason))
    stuck = planning_stuck(service)
    checks.append(Check("planner", stuck is None, stuck))
    return checks


def planning_stuck(service: RunningDaemon) -> str | None:
    """Why the planning loop is stuck, or None when it comes round."""
    if service.reconciler is None:
        return "not started"
    quiet = time.monotonic() - service.reconciler.heartbeat
    if quiet > STUCK_AFTER_S:
        return f"the planning loop has not come round for {quiet:.0f}s"
    return None


async def alive_for_watchdog(service: RunningDaemon) -> str | None:
    """Why systemd's watchdog must not be pinged, or None: the planning loop comes
    round and the journal answers. A journal that refuses writes (a full disk) still
    answers: that is a state the daemon reports and recovers from, not a hang a
    restart would cure."""
    stuck = planning_stuck(service)
    if stuck is not None:
        return stuck
    journal = service.journal
    if journal is None:
        return "no journal"
    try:
        async with asyncio.timeout(JOURNAL_ANSWER_S):
            await journal.answers()
    except TimeoutError:
        return f"the journal did not answer in {JOURNAL_ANSWER_S:.0f}s"
    except Exception as exc:
        return f"the journal failed to answer: {exc}"
    return None
