"""sd_notify without a package: one datagram to $NOTIFY_SOCKET."""

from __future__ import annotations

import os
import socket

import structlog

log = structlog.get_logger("tapeworker.sdnotify")


def notify(*lines: str) -> bool:
    """Send READY=1 / STATUS=... / WATCHDOG=1; False when not under systemd or when
    the socket does not take the message."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall("\n".join(lines).encode("utf-8"))
    except OSError as exc:
        # As libsystemd's sd_notify: a status systemd did not get is no reason to stop
        # serving (a missed watchdog ping is what systemd itself acts on).
        log.warning("systemd notification not sent", socket=address, error=str(exc))
        return False
    return True


def watchdog_interval_s() -> float | None:
    """Half the unit's WatchdogSec, or None when no watchdog is asked for."""
    usec = os.environ.get("WATCHDOG_USEC")
    if not usec or not usec.isdigit():
        return None
    if os.environ.get("WATCHDOG_PID") not in (None, str(os.getpid())):
        return None
    return int(usec) / 2_000_000
