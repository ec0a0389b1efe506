"""A fleet of libraries on one broker: each daemon's identity and what it publishes.

One daemon runs per media changer; the broker is the only part libraries share.
Everything a daemon publishes is under its own `<prefix>/libraries/<library_id>/`, so
two daemons never overwrite each other's state (docs/failover.md has the design).
"""

from __future__ import annotations

import re

from worker.errors import ConfigError

#: One MQTT topic level, and a name an operator can type: no `/`, `+` or `#` (topic
#: separators and wildcards), no leading `$` (the broker's own topics).
LIBRARY_ID_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,63}$"
_LIBRARY_ID = re.compile(LIBRARY_ID_PATTERN)


def resolve_library_id(configured: str | None, definition_name: str) -> str:
    """The configured library id, else the library definition's name, checked."""
    if configured is not None:
        return configured
    if not _LIBRARY_ID.match(definition_name):
        raise ConfigError(
            f"library_id: the library definition's name {definition_name[:80]!r} is not a "
            "valid library id (1 to 64 of A-Z a-z 0-9 _ . -, not starting with . or -): "
            "set library_id in the configuration"
        )
    return definition_name


def library_topic(prefix: str, library_id: str) -> str:
    """The topic under which one library publishes its state."""
    return f"{prefix}/libraries/{library_id}"
