"""A real mosquitto on a free loopback port, with its own config and data folder."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from worker.intake.mqtt import ReadAhead

SHIPPED_CONFIG = Path(__file__).resolve().parents[2] / "config" / "mosquitto.conf"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def count_reads(chunk: ReadAhead) -> list[int]:
    """The size of each socket read the connection makes from now on."""
    reads: list[int] = []
    recv = chunk._recv

    def counted(size: int) -> bytes:
        data = recv(size)
        reads.append(len(data))
        return data

    chunk._recv = counted
    return reads


def feed_reads(chunk: ReadAhead, chunks: list[bytes]) -> None:
    """The connection's next socket reads bring `chunks`, one a read, then nothing yet
    (as a non-blocking socket says it). Taken from the list as they are read."""

    def fed(_size: int) -> bytes:
        if not chunks:
            raise BlockingIOError
        return chunks.pop(0)

    chunk._recv = fed


def mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )
    if found is None:
        raise RuntimeError("mosquitto is not installed: run `make test`, which installs it")
    return found


def shipped_persistence() -> str:
    """The persistence settings of the shipped config/mosquitto.conf (not its paths)."""
    lines = [
        line.strip()
        for line in SHIPPED_CONFIG.read_text(encoding="utf-8").splitlines()
        if line.strip().startswith(("persistence ", "autosave_"))
    ]
    return "".join(f"{line}\n" for line in lines)


@dataclass
class Broker:
    port: int
    folder: Path
    process: subprocess.Popen[bytes] | None = None
    #: More mosquitto.conf lines (later lines win), e.g. `shipped_persistence()`.
    extra_config: str = ""

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        data = self.folder / "data"
        data.mkdir(exist_ok=True)
        config = self.folder / "mosquitto.conf"
        config.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {data}/\n"
            "max_queued_messages 100000\n"
            "persistent_client_expiration 1d\n"
            f"log_dest file {self.folder / 'mosquitto.log'}\n"
            f"{self.extra_config}",
            encoding="utf-8",
        )
        # As root mosquitto switches to user "mosquitto" unless told to stay.
        if os.geteuid() == 0:
            with config.open("a", encoding="utf-8") as f:
                f.write("user root\n")
        self.process = subprocess.Popen(
            [mosquitto_binary(), "-c", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stderr is not None:
            self.process.stderr.close()
        self.process = None

    def kill(self) -> None:
        """A broker crash: SIGKILL, no chance to save anything."""
        if self.process is None:
            return
        self.process.kill()
        self.process.wait()
        if self.process.stderr is not None:
            self.process.stderr.close()
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()
