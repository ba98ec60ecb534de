"""A real Mosquitto broker on a free loopback port, started and stopped by tests."""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mosquitto_binary() -> str:
    path = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
    if path is None:
        raise RuntimeError("mosquitto is not installed; `make test` installs it (apt-get install mosquitto)")
    return path


class Mosquitto:
    def __init__(self, workdir: Path, port: int | None = None, extra_conf: str = "") -> None:
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.workdir = workdir
        self.conf = workdir / f"mosquitto-{self.port}.conf"
        self.extra_conf = extra_conf
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = workdir / f"mosquitto-{self.port}.log"

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def start(self) -> "Mosquitto":
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest stderr\n"
            f"max_queued_messages 100000\n{self.extra_conf}"
        )
        from fleet_server.mqtt.mosquitto import launch_mosquitto

        self.proc = launch_mosquitto(self.conf, self.log, self.host, self.port)
        return self

    def stop(self) -> None:
        from fleet_server.mqtt.mosquitto import stop_process

        stop_process(self.proc)
        self.proc = None
