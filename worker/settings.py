"""Configuration: one TOML file, overridable by TAPEWORKER_* environment variables.

The file is the first of: --config, $TAPEWORKER_CONFIG, /etc/tapeworker/tapeworker.toml,
the built-in demo (package data). The state directory is the first of:
$TAPEWORKER_STATE_DIR, the file's `state_dir`, /var/lib/tapeworker; the built-in demo
keeps its state in $XDG_STATE_HOME/tapeworker instead, so that trying it needs no root.
The daemon, the CLI and the systemd unit share this one rule.

A bad file is reported with the file, the key and the problem before anything
starts (exit status 2 from the CLI).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from drivers import open_library
from drivers.base import TapeLibrary
from drivers.definition import LibraryDefinition
from worker.core.planner import PlanPolicy
from worker.errors import ConfigError
from worker.fleet import LIBRARY_ID_PATTERN

#: Shipped with the package: the default configuration and the demo library.
DEFAULTS = Path(__file__).resolve().parent / "defaults"
BUILTIN_CONFIG = DEFAULTS / "tapeworker.toml"
SYSTEM_CONFIG = Path("/etc/tapeworker/tapeworker.toml")
SYSTEM_STATE_DIR = Path("/var/lib/tapeworker")


#: The HTTP API's scopes: the seed's per operation, one for the release extension, and
#: one per kind of operator control under /admin.
ApiScope = Literal[
    "task_destinations/index",
    "task_destinations/create",
    "task_destinations/show",
    "task_destinations/update",
    "task_destinations/destroy",
    "task_destinations/release",
    "admin/drives",
    "admin/tapes",
    "admin/drain",
    "admin/release",
    "admin/api_keys",
]


class TaskEntry(BaseModel):
    """A task of the archive manager, so that its name may stand for its id in a path."""

    model_config = ConfigDict(extra="forbid")

    id: Annotated[int, Field(ge=0, le=2**53)]
    name: str = Field(min_length=1, max_length=255)


class HttpSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8407
    #: user name -> password for HTTP Basic authentication.
    users: dict[str, SecretStr] = Field(default_factory=dict)
    #: Users (of `users`) who hold every admin/... scope (the operator's controls and
    #: API keys), on top of their other scopes.
    admin_users: list[str] = Field(default_factory=list)
    # Limits under load (see worker/intake/http/guard.py and the README's "HTTP under load").
    #: Open connections at most; a new one evicts the longest idle one.
    max_connections: Annotated[int, Field(ge=1)] = 2048
    #: Requests in the application at once; more wait in a queue.
    max_concurrent_requests: Annotated[int, Field(ge=1)] = 8
    #: Of those, one client (one set of credentials) holds at most this many.
    max_concurrent_per_client: Annotated[int, Field(ge=1)] = 4
    max_queued_requests: Annotated[int, Field(ge=0)] = 64
    #: A queued request is answered 503 (Retry-After) after this long.
    queue_timeout_s: Annotated[float, Field(gt=0)] = 0.5
    #: Once the oldest queued request has waited this long, the newest goes first.
    lifo_after_s: Annotated[float, Field(ge=0)] = 0.05
    #: A request head must arrive whole within this long (408, then close).
    header_timeout_s: Annotated[float, Field(gt=0)] = 10.0
    #: A request body must arrive whole within this long of its head (408).
    body_timeout_s: Annotated[float, Field(gt=0)] = 30.0
    #: An idle keep-alive connection is closed after this long.
    keep_alive_s: Annotated[float, Field(ge=1)] = 5.0
    #: The request line and headers together, at most (431 beyond).
    max_header_bytes: Annotated[int, Field(ge=1024)] = 16 * 1024
    #: How long a create's Idempotency-Key answers its retries (see http_idempotency).
    idempotency_keep_s: Annotated[float, Field(gt=0)] = 24 * 3600.0
    #: The task catalog: names a path may use for a task (names need not be unique).
    tasks: list[TaskEntry] = Field(default_factory=list)
    #: A larger request body is refused with 413 before it is read whole.
    max_body_bytes: Annotated[int, Field(ge=1024)] = 1024 * 1024
    #: A longer query string is refused with 414.
    max_query_bytes: Annotated[int, Field(ge=256)] = 4096
    #: user name -> the scopes a Basic user holds (a user not listed holds every
    #: task_destinations/... scope; admin/... scopes come from here or `admin_users`).
    user_scopes: dict[str, list[ApiScope]] = Field(default_factory=dict)


class MqttSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: No host = no MQTT intake (the embedded HTTP default still works).
    host: str | None = None
    port: Annotated[int, Field(ge=1, le=65535)] = 1883
    username: str | None = None
    password: SecretStr | None = None
    #: The MQTT client id; by default `tapeworker-<library_id>`, so that daemons of a
    #: fleet never take over each other's session. Set it to keep an older session.
    client_id: str | None = Field(default=None, min_length=1, max_length=128)
    #: Topics are `<prefix>/tasks/<task>/task_destinations/<id>/<verb>`.
    prefix: str = Field(default="tapeworker", pattern=r"^[A-Za-z0-9_\-]+(/[A-Za-z0-9_\-]+)*$")
    keepalive: Annotated[int, Field(ge=5)] = 30
    #: How long the broker keeps our session (and queues events) while we are away.
    session_expiry_s: Annotated[int, Field(ge=60)] = 7 * 24 * 3600
    reconnect_max_s: Annotated[float, Field(gt=0)] = 30.0
    #: How often the library's summary for the fleet view is refreshed (published
    #: only when it changed).
    fleet_interval_s: Annotated[float, Field(gt=0)] = 5.0


class FleetSettings(BaseModel):
    """`[fleet]`: how a library shares the destinations of a fleet (docs/failover.md)."""

    model_config = ConfigDict(extra="forbid")

    #: Take part in a fleet's routing (needs [mqtt]): a destination naming a tape
    #: another library holds is journaled as not ours, and destinations naming only a
    #: pool are read from `<prefix>/pools/<pool>/tasks/...` by every library of the
    #: pool and applied by one of them.
    routing: bool = False
    #: No longer used (the pools are not read through a shared subscription any
    #: more); still accepted so that older configurations load.
    share_group: str = Field(default="tapeworker", pattern=r"^[A-Za-z0-9_\-]{1,64}$")
    #: A pool destination that no library could serve is failed after this many
    #: hand-offs (each library that cannot serve it passes it on once).
    max_hand_offs: Annotated[int, Field(ge=0, le=100)] = 3
    #: Pool commands the broker may send before we acknowledge them (each is
    #: journaled first; the rest waits in our session on the broker).
    receive_maximum: Annotated[int, Field(ge=1, le=65535)] = 10


class ExecutorSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    move_timeout_s: Annotated[float, Field(gt=0)] = 600.0
    ready_timeout_s: Annotated[float, Field(gt=0)] = 300.0
    ready_poll_s: Annotated[float, Field(gt=0)] = 2.0
    retries: Annotated[int, Field(ge=0)] = 3
    backoff_s: Annotated[float, Field(ge=0)] = 5.0
    #: Consecutive failures after which a drive is marked down.
    drive_down_after: Annotated[int, Field(ge=1)] = 3
    #: SIGTERM waits this long for the moves in progress, then stops all the same
    #: (systemd's TimeoutStopSec must be longer).
    stop_timeout_s: Annotated[float, Field(ge=0)] = 300.0
    #: The changer is re-inventoried this often, when no move is in flight, to find
    #: what changed behind the daemon's back (0: only at start-up and after errors).
    inventory_interval_s: Annotated[float, Field(ge=0)] = 300.0


#: The planner's defaults live in PlanPolicy; the settings only add validation.
_PLAN_DEFAULTS = PlanPolicy()


class PlannerSettings(BaseModel):
    """`[planner]`: the fields of PlanPolicy an operator may set, with its defaults."""

    model_config = ConfigDict(extra="forbid")

    #: Unload an idle tape nobody needs after this long (about one unload's cost).
    dismount_delay_s: Annotated[float, Field(ge=0)] = _PLAN_DEFAULTS.dismount_delay_s
    max_age_s: Annotated[float, Field(gt=0)] = _PLAN_DEFAULTS.max_age_s
    #: At most this many drives per pool (0 = no cap).
    pool_drive_cap: Annotated[int, Field(ge=0)] = _PLAN_DEFAULTS.pool_drive_cap
    #: Drives kept empty for the next mount (unset: half of them, at least one).
    spare_drives: Annotated[int, Field(ge=0)] | None = _PLAN_DEFAULTS.spare_drives
    #: A pool already writing on a tape opens another only past these thresholds.
    pool_open_bytes: Annotated[int, Field(ge=0)] = _PLAN_DEFAULTS.pool_open_bytes
    pool_open_after_s: Annotated[float, Field(ge=0)] = _PLAN_DEFAULTS.pool_open_after_s
    #: A pool's writable tape stays mounted this long idle, for the pool's next write.
    pool_dismount_delay_s: Annotated[float, Field(ge=0)] = _PLAN_DEFAULTS.pool_dismount_delay_s
    #: A write leaves its pool's fill order (fullest tape first) only for a tape
    #: cheaper to start writing on by more than this (inf: never).
    write_margin_s: Annotated[float, Field(ge=0)] = _PLAN_DEFAULTS.write_margin_s
    #: The planner's locate estimate: a constant plus this per whole tape length.
    locate_base_s: Annotated[float, Field(ge=0)] = _PLAN_DEFAULTS.locate_base_s
    locate_per_length_s: Annotated[float, Field(ge=0)] = _PLAN_DEFAULTS.locate_per_length_s

    def policy(self) -> PlanPolicy:
        """The planner's settings; `tapeworker simulate --config` uses the same."""
        return dataclasses.replace(_PLAN_DEFAULTS, **self.model_dump())


class JournalSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: Events, ended requests, finished operations and destroyed destinations older
    #: than this are pruned. Keep it longer than the broker's session expiry: a
    #: redelivered event older than this is no longer recognised as seen.
    retention_days: Annotated[float, Field(gt=0)] = 30.0
    #: How often the pruning runs (in the background, in small transactions).
    prune_interval_s: Annotated[float, Field(gt=0)] = 3600.0
    #: A stored event payload keeps this many bytes, plus the size and SHA-256 of all.
    max_payload_bytes: Annotated[int, Field(ge=1024)] = 64 * 1024
    #: Back-off while the journal refuses writes: first retry and longest wait.
    retry_first_s: Annotated[float, Field(gt=0)] = 0.5
    retry_max_s: Annotated[float, Field(gt=0)] = 30.0


class MtxSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: The tools, by name on PATH or by absolute path.
    mtx: str = Field(default="mtx", pattern=r"^[A-Za-z0-9_./\-]+$")
    mt: str = Field(default="mt", pattern=r"^[A-Za-z0-9_./\-]+$")
    #: A robot move or an unload may take minutes (mtx itself waits up to 30).
    timeout_s: Annotated[float, Field(gt=0)] = 900.0
    #: Added to the tools' environment, for example the simulated library's
    #: `LD_PRELOAD` and `UMOCKDEV_DIR` (`tapeworker sim exec`, the tests).
    env: dict[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")], str] = Field(
        default_factory=dict
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TAPEWORKER_",
        env_nested_delimiter="__",
        extra="forbid",
    )

    state_dir: Path = SYSTEM_STATE_DIR
    library: Path = DEFAULTS / "demo-library.toml"
    #: This library's name in a fleet (topics, client id, logs, metrics); by default
    #: the `name` of the library definition.
    library_id: str | None = Field(default=None, pattern=LIBRARY_ID_PATTERN)
    backend: Literal["sim", "mtx"] = "sim"
    #: The simulator's clock runs this many times faster than real time.
    sim_speed: Annotated[float, Field(gt=0)] = 10.0
    #: How long a ready destination holds its drive without a renewal.
    hold_seconds: Annotated[float, Field(gt=0)] = 3600.0
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "console", "journald"] = "console"
    http: HttpSettings = Field(default_factory=HttpSettings)
    mqtt: MqttSettings = Field(default_factory=MqttSettings)
    fleet: FleetSettings = Field(default_factory=FleetSettings)
    executor: ExecutorSettings = Field(default_factory=ExecutorSettings)
    planner: PlannerSettings = Field(default_factory=PlannerSettings)
    journal: JournalSettings = Field(default_factory=JournalSettings)
    mtx: MtxSettings = Field(default_factory=MtxSettings)

    @model_validator(mode="after")
    def _routing_needs_the_broker(self) -> Settings:
        if self.fleet.routing and not self.mqtt.host:
            raise ValueError("fleet.routing needs the fleet's broker: set [mqtt] host")
        return self

    @model_validator(mode="after")
    def _retention_outlives_the_broker_session(self) -> Settings:
        # A message the broker redelivers after its journal row was pruned would be
        # applied again: the journal must remember at least as long as the broker.
        if self.mqtt.host and self.journal.retention_days * 86400 < self.mqtt.session_expiry_s:
            raise ValueError(
                f"journal.retention_days ({self.journal.retention_days:g}) is shorter than "
                f"mqtt.session_expiry_s ({self.mqtt.session_expiry_s} s): an event the broker "
                "redelivers after it was pruned would be applied again"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = os.environ.get("_TAPEWORKER_CONFIG_FILE")
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_file))
        return tuple(sources)

    def open_library(self, definition: LibraryDefinition) -> TapeLibrary:
        """The backend this configuration names (the one place that picks it)."""
        return open_library(
            self.backend,
            definition,
            state_file=self.sim_state_path,
            speed=self.sim_speed,
            mtx=self.mtx.mtx,
            mt=self.mtx.mt,
            timeout_s=self.mtx.timeout_s,
            mtx_env=self.mtx.env,
            lock_file=self.changer_lock_path,
        )

    @property
    def journal_path(self) -> Path:
        return self.state_dir / "journal.sqlite3"

    @property
    def sim_state_path(self) -> Path:
        return self.state_dir / "sim-library.json"

    @property
    def changer_lock_path(self) -> Path:
        """Held around every changer command, by the daemon and by the CLI."""
        return self.state_dir / "changer.lock"


def find_config(explicit: Path | None = None) -> Path:
    """The configuration file: --config, $TAPEWORKER_CONFIG, the system file, the demo."""
    if explicit is not None:
        if not explicit.is_file():
            raise ConfigError(f"{explicit}: configuration file not found")
        return explicit
    from_env = os.environ.get("TAPEWORKER_CONFIG")
    if from_env:
        if not Path(from_env).is_file():
            raise ConfigError(f"{from_env} (TAPEWORKER_CONFIG): configuration file not found")
        return Path(from_env)
    if SYSTEM_CONFIG.is_file():
        return SYSTEM_CONFIG
    return BUILTIN_CONFIG


def demo_state_dir() -> Path:
    """Where the built-in demo keeps its state: the user's XDG state directory."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "tapeworker"


def load_settings(config: Path | None = None) -> Settings:
    """Read the file (found by `find_config`) and the environment.

    Raise ConfigError naming the file, the key and the problem.
    """
    config = find_config(config)
    previous = os.environ.get("_TAPEWORKER_CONFIG_FILE")
    try:
        os.environ["_TAPEWORKER_CONFIG_FILE"] = str(config)
        settings = Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top)'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"{config}: {problems}") from exc
    except ValueError as exc:  # TOML syntax errors surface as ValueError subclasses
        raise ConfigError(f"{config}: {exc}") from exc
    finally:
        if previous is None:
            os.environ.pop("_TAPEWORKER_CONFIG_FILE", None)
        else:
            os.environ["_TAPEWORKER_CONFIG_FILE"] = previous
    # Relative paths in a file are relative to the file, so a unit can point anywhere.
    base = config.resolve().parent
    updates: dict[str, Path] = {}
    if not settings.library.is_absolute() and "TAPEWORKER_LIBRARY" not in os.environ:
        updates["library"] = base / settings.library
    if "state_dir" not in settings.model_fields_set and config == BUILTIN_CONFIG:
        updates["state_dir"] = demo_state_dir()
    elif not settings.state_dir.is_absolute() and "TAPEWORKER_STATE_DIR" not in os.environ:
        updates["state_dir"] = base / settings.state_dir
    if updates:
        settings = settings.model_copy(update=updates)
    return settings
