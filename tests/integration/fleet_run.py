"""A fleet of real daemons on one real mosquitto, and an archive manager publishing to it.

Shared by the fleet's routing test and its benchmark: three (or more) simulated
libraries, each with its own tapes, two of them sharing a pool, each run by its own
daemon with `[fleet] routing = true`.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.integration.daemon import Daemon
from worker.fleet import routing

PREFIX = "tw-fleet"
SHARED_POOL = "shared"
#: Full in library a, writable in b: a's share of it is handed on to b.
TIGHT_POOL = "tight"
#: Full everywhere: handed on until the bound, then failed.
HOPELESS_POOL = "hopeless"


def library_toml(name: str, number: int, *, pools: Iterable[str]) -> str:
    """A small library: four LTO-9 drives, four own tapes, and tapes of the given pools."""
    code = name.upper()[0] * 3
    pools = list(pools)
    lines = [
        f'name = "{name}"',
        f"tape_library_id = {number}",
        'changer = "/dev/sg9"',
        "slots = 24",
        "import_export = 1",
    ]
    for index in range(4):
        lines += ["[[drives]]", f"index = {index}", f'device = "/dev/nst{index}"', "generation = 9"]
    own = f"{name}-own"
    for pool_id, pool in enumerate([own, *pools], start=1):
        lines += ["[[pools]]", f"id = {pool_id}", f'name = "{pool}"']
    slot = 1
    for i in range(1, 5):
        lines += ["[[tapes]]", f'barcode = "{code}{i:03d}L9"', f"slot = {slot}", f'pool = "{own}"']
        slot += 1
    for pool in pools:
        full = pool == HOPELESS_POOL or (pool == TIGHT_POOL and name == "a")
        for i in range(1, 4):
            barcode = f"{pool[0].upper()}{name.upper()[0]}{pool[1].upper()}{i:03d}L9"
            lines += ["[[tapes]]", f'barcode = "{barcode}"', f"slot = {slot}", f'pool = "{pool}"']
            if full:
                lines.append("full = true")
            slot += 1
    return "\n".join(lines) + "\n"


def own_barcodes(name: str) -> list[str]:
    code = name.upper()[0] * 3
    return [f"{code}{i:03d}L9" for i in range(1, 5)]


def fleet_daemon(
    folder: Path, name: str, number: int, broker_port: int, pools: Iterable[str]
) -> Daemon:
    folder.mkdir(parents=True, exist_ok=True)
    library = folder / "library.toml"
    library.write_text(library_toml(name, number, pools=pools), encoding="utf-8")
    daemon = Daemon(
        folder=folder,
        mqtt_port=broker_port,
        prefix=PREFIX,
        library=library,
        extra_config=f'library_id = "{name}"\n[fleet]\nrouting = true\nmax_hand_offs = 3\n',
    )
    daemon.write_config()
    return daemon


@dataclass(frozen=True)
class Destination:
    id: int
    #: The barcode, or None for a pool destination.
    barcode: str | None
    pool: str | None

    @property
    def topic(self) -> str:
        command = f"9/task_destinations/{self.id}/create"
        if self.barcode is None:
            return f"{routing.pool_commands(PREFIX, self.pool or '')}/{command}"
        return f"{PREFIX}/tasks/{command}"

    @property
    def body(self) -> bytes:
        body: dict[str, object] = {"folder_id": self.id, "folder_path": f"/c/f{self.id}"}
        if self.barcode is not None:
            body["tape_barcode"] = self.barcode
        else:
            body["pool_name"] = self.pool
        return json.dumps(body).encode()


def properties(destination: Destination) -> Properties:
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.UserProperty = [("event-id", f"td-{destination.id}-v1"), ("sequence", "1")]
    return props


@dataclass
class ArchiveManager:
    """The publisher's side: QoS 1, an event-id on every command, each published once.
    It watches the claims, as an archive manager that shows who took what would."""

    port: int
    claims: dict[int, str] = field(default_factory=dict)
    published_at: dict[int, float] = field(default_factory=dict)
    #: Set on every claim, for a waiter to wake on.
    claimed: asyncio.Event = field(default_factory=asyncio.Event)

    async def publish(self, client: aiomqtt.Client, destination: Destination) -> None:
        self.published_at.setdefault(destination.id, time.monotonic())
        await client.publish(
            destination.topic, destination.body, qos=1, properties=properties(destination)
        )

    async def watch_claims(self, client: aiomqtt.Client) -> None:
        await client.subscribe(f"{PREFIX}/pools/+/claims/+", qos=1)
        async for message in client.messages:
            claim = (
                routing.parse_claim(message.payload) if isinstance(message.payload, bytes) else None
            )
            if claim is not None:
                self.claims.setdefault(claim.destination_id, claim.library_id)
                self.claimed.set()

    async def until_claimed(self, destinations: Iterable[Destination], *, timeout: float) -> None:
        """Wait until every one of the destinations has a claim (published nothing again)."""
        wanted = {d.id for d in destinations}
        try:
            async with asyncio.timeout(timeout):
                while not wanted <= self.claims.keys():
                    self.claimed.clear()
                    await self.claimed.wait()
        except TimeoutError:
            missing = sorted(wanted - self.claims.keys())
            raise AssertionError(f"pool destinations never claimed: {missing}") from None
