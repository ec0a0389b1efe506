"""The library definition: what a library physically is and which cartridges it holds.

One TOML file describes the drives (changer element index, device, generation),
the slot counts and the cartridges with their pools. The simulator builds its
library from it; the worker reads the catalog (pools, tape flags) from it; the mtx
backend reads the drive mapping.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from drivers.errors import DefinitionError, InvalidArgumentError
from drivers.media import BARCODE_RE, parse_generation

#: Device paths we pass to mtx/mt: /dev/sgN, /dev/nstN, /dev/tape/by-id/..., or a
#: simulated device under a state folder. No shell metacharacters, no option look-alikes.
DEVICE_RE = re.compile(r"^/[A-Za-z0-9_./:+@\-]{1,255}$")


def validate_device(path: str) -> str:
    if not DEVICE_RE.fullmatch(path) or "/../" in path or path.endswith("/.."):
        raise InvalidArgumentError(f"invalid device path {path!r}")
    return path


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DriveDefinition(_Strict):
    index: Annotated[int, Field(ge=0, description="mtx data transfer element (0-based)")]
    device: str = Field(description="non-rewinding tape device, e.g. /dev/nst0")
    generation: int = Field(description="LTO generation, written 'LTO-9' or 9")
    serial: str | None = None

    @field_validator("generation", mode="before")
    @classmethod
    def _generation(cls, value: object) -> int:
        if isinstance(value, int):
            if not 1 <= value <= 9:
                raise ValueError(f"LTO generation out of range: {value}")
            return value
        return parse_generation(str(value))

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        try:
            return validate_device(value)
        except InvalidArgumentError as exc:
            raise ValueError(exc.message) from exc


class TapeDefinition(_Strict):
    barcode: str
    slot: Annotated[int, Field(ge=1)] | None = None
    drive: Annotated[int, Field(ge=0)] | None = None
    pool: str | None = None
    locked: bool = False
    write_protected: bool = False
    full: bool = False
    need_to_check: bool = False
    used_bytes: Annotated[int, Field(ge=0)] = 0
    cleaning_uses_left: Annotated[int, Field(ge=0)] = 50

    @field_validator("barcode")
    @classmethod
    def _barcode(cls, value: str) -> str:
        if not BARCODE_RE.fullmatch(value):
            raise ValueError(f"invalid barcode {value!r}")
        return value


#: Pool types as the archive manager's API enumerates them.
PoolType = Literal[
    "active_archive", "offline_archive", "data_exchange", "scratch", "data_enrichment", "primary"
]


class PoolDefinition(_Strict):
    id: int
    name: str
    content: Literal["tape", "disk", "cloud", "nas"] = "tape"
    type: PoolType = "active_archive"
    comment: str = ""
    #: The archive manager's pool setting: a full tape becomes write-protected.
    tape_write_protect_when_full: bool = True


class LibraryDefinition(_Strict):
    name: str = "library0"
    #: The archive manager's numeric id of this library (its tapes' `tape_library_id`).
    tape_library_id: Annotated[int, Field(ge=1, le=2**31 - 1)] = 1
    changer: str = Field(default="/dev/sg0", description="media changer generic SCSI device")
    slots: Annotated[int, Field(ge=1, le=10000)] = Field(description="storage slots")
    import_export: Annotated[int, Field(ge=0, le=256)] = 0
    drives: tuple[DriveDefinition, ...]
    pools: tuple[PoolDefinition, ...] = ()
    tapes: tuple[TapeDefinition, ...] = ()
    #: Some libraries refuse to take a cartridge from a drive that still holds it
    #: threaded; for those we `mt offline` before `mtx unload`.
    offline_before_unload: bool = True
    #: What the changer answers to INQUIRY (the simulated library's identity).
    vendor: str = Field(default="TAPEWORK", pattern=r"^[ -~]{1,8}$")
    product: str = Field(default="SIMULATED LIB", pattern=r"^[ -~]{1,16}$")

    @field_validator("changer")
    @classmethod
    def _changer(cls, value: str) -> str:
        try:
            return validate_device(value)
        except InvalidArgumentError as exc:
            raise ValueError(exc.message) from exc

    @model_validator(mode="after")
    def _consistent(self) -> LibraryDefinition:
        indexes = [d.index for d in self.drives]
        if len(set(indexes)) != len(indexes):
            raise ValueError(f"duplicate drive index in {indexes}")
        total = self.slots + self.import_export
        seen_slots: dict[int, str] = {}
        seen_barcodes: set[str] = set()
        pool_names = {p.name for p in self.pools}
        for tape in self.tapes:
            if tape.barcode in seen_barcodes:
                raise ValueError(f"barcode {tape.barcode} listed twice")
            seen_barcodes.add(tape.barcode)
            if (tape.slot is None) == (tape.drive is None):
                raise ValueError(f"tape {tape.barcode}: give exactly one of slot or drive")
            if tape.slot is not None:
                if tape.slot > total:
                    raise ValueError(f"tape {tape.barcode}: slot {tape.slot} > {total} slots")
                if tape.slot in seen_slots:
                    raise ValueError(
                        f"slot {tape.slot} holds both {seen_slots[tape.slot]} and {tape.barcode}"
                    )
                seen_slots[tape.slot] = tape.barcode
            if tape.drive is not None and tape.drive not in indexes:
                raise ValueError(f"tape {tape.barcode}: no drive {tape.drive}")
            if tape.pool is not None and tape.pool not in pool_names:
                raise ValueError(f"tape {tape.barcode}: unknown pool {tape.pool!r}")
        return self

    def drive(self, index: int) -> DriveDefinition:
        for drive in self.drives:
            if drive.index == index:
                return drive
        raise KeyError(index)

    def pool(self, name: str) -> PoolDefinition | None:
        return next((p for p in self.pools if p.name == name), None)


def load_definition(path: Path) -> LibraryDefinition:
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise DefinitionError(f"{path}: library definition not found") from exc
    except tomllib.TOMLDecodeError as exc:
        raise DefinitionError(f"{path}: not valid TOML: {exc}") from exc
    try:
        return LibraryDefinition.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top)'}: {err['msg']}"
            for err in exc.errors()
        )
        raise DefinitionError(f"{path}: {problems}") from exc
