"""MQTT packet-size cap (issue 10, N3): a device announcing a huge PUBLISH is disconnected before
the broker reads the body, so it cannot inflate the server's memory, and the fleet keeps ingesting.

Measured before the fix: four parallel 200 MB publishes on a device's own telemetry topic took the
server (embedded amqtt broker, in-process) from 116 MB to 1.37 GB RSS. Both stacks are real: the
embedded broker + SQLite (in this process, so tracemalloc sees every byte amqtt buffers) and
Mosquitto with dynamic security + PostgreSQL (its peak RSS, VmHWM, is read from /proc). The big
publishes come from separate ``mosquitto_pub`` processes, so the client's copy of the payload is
not counted as the server's.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tracemalloc
from pathlib import Path

import pytest
from amqtt.adapters import StreamReaderAdapter

from edgefleet.protocol import MAX_BATCH_BYTES, device_topic
from fleet_server.mqtt.broker import MAX_PACKET_BYTES, PacketTooLarge, _BoundedReader
from tests.fleet_server.conftest import wait_for
from tests.fleet_server.test_hostile_devices import Stack, stack  # noqa: F401 - the two-stack fixture

pytestmark = pytest.mark.timeout(120)

MOSQUITTO_PUB = shutil.which("mosquitto_pub") or "mosquitto_pub"  # `make test` installs mosquitto-clients
HUGE = 5 * 1000 * 1000  # the brief's 5 MB message
PARALLEL = 4
GROWTH_BOUND = 2 * 1024 * 1024  # bytes of server memory the four refused publishes may cost at most


def test_limit_leaves_room_for_a_full_batch() -> None:
    # A 256 KiB batch plus MQTT framing (fixed header <= 5, topic <= 2 + 65535, packet id 2).
    assert MAX_BATCH_BYTES + 5 + 2 + 65535 + 2 < MAX_PACKET_BYTES


def _publish_header(remaining: int) -> bytes:
    out = bytearray([0x32])  # PUBLISH, QoS 1
    while True:
        byte, remaining = remaining % 128, remaining // 128
        out.append(byte | (0x80 if remaining else 0))
        if not remaining:
            return bytes(out)


def _feed_and_read(packets: bytes, limit: int) -> tuple[list[bytes], BaseException | None, int]:
    """Feed ``packets`` to a real asyncio StreamReader and read them the way amqtt does (type
    byte, one length byte at a time, then the body in one read); return the bodies read, the
    error raised, and how many bytes were taken from the stream."""

    async def run() -> tuple[list[bytes], BaseException | None, int]:
        raw = asyncio.StreamReader()
        raw.feed_data(packets)
        raw.feed_eof()
        reader = _BoundedReader(StreamReaderAdapter(raw), limit)
        bodies: list[bytes] = []
        error: BaseException | None = None
        try:
            while not raw.at_eof():
                await reader.read(1)
                length, mult = 0, 1
                while True:
                    b = (await reader.read(1))[0]
                    length += (b & 0x7F) * mult
                    mult *= 128
                    if not b & 0x80:
                        break
                bodies.append(await reader.read(length))
        except PacketTooLarge as exc:
            error = exc
        return bodies, error, len(packets) - len(await raw.read())

    return asyncio.run(run())


def test_bounded_reader_refuses_at_the_length_before_reading_the_body() -> None:
    limit = 1000
    ok = _publish_header(limit) + b"a" * limit
    bad = _publish_header(limit + 1) + b"b" * (limit + 1)
    bodies, err, taken = _feed_and_read(ok + ok + bad, limit)
    assert bodies == [b"a" * limit, b"a" * limit]
    assert isinstance(err, PacketTooLarge) and str(limit + 1) in str(err)
    assert taken == 2 * len(ok) + len(_publish_header(limit + 1))  # the oversized body was never read
    # A huge announced length (256 MB, MQTT's maximum) is refused just the same, from 5 header bytes.
    bodies, err, taken = _feed_and_read(_publish_header(268_435_455) + b"c" * 100, limit)
    assert bodies == [] and isinstance(err, PacketTooLarge) and taken == 5


def _vm_hwm_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmHWM for pid {pid}")


def _huge_publishes(stack: Stack, payload: Path) -> list[subprocess.CompletedProcess[bytes]]:
    """PARALLEL mosquitto_pub processes, each sending ``payload`` as one QoS 1 message on the bad
    device's own telemetry topic; returns once all of them ended (bounded by their timeout)."""
    cred = stack.creds["bad"]
    cmd = [MOSQUITTO_PUB, "-h", "127.0.0.1", "-p", str(stack.port), "-u", cred["device_id"], "-P", cred["token"],
           "-i", f"edgefleet-device-{cred['device_id']}", "-q", "1", "-t", device_topic(cred["device_id"], "telemetry"),
           "-f", str(payload)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(PARALLEL)]
    out = []
    for p in procs:
        try:
            stdout, stderr = p.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            stdout, stderr = p.communicate()
        out.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
    return out


def test_huge_publish_is_disconnected_without_memory_growth(stack: Stack, tmp_path: Path) -> None:  # noqa: F811
    if shutil.which(MOSQUITTO_PUB) is None:
        pytest.fail("mosquitto_pub is missing (apt-get install mosquitto-clients)")
    before = stack.counters()
    payload = tmp_path / "huge.bin"
    with payload.open("wb") as f:  # written in chunks and before tracing, so it is not counted
        for _ in range(HUGE // 100_000):
            f.write(b"x" * 100_000)
    if stack.broker is None:  # embedded: the broker runs in this process
        oversized_before = stack.server.broker.oversized
        tracemalloc.start()
        try:
            base, _ = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            results = _huge_publishes(stack, payload)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        growth = peak - base
        wait_for(lambda: stack.server.broker.oversized - oversized_before == PARALLEL, timeout=5,
                 what="every oversized connection counted")
    else:
        pid = stack.broker.proc.pid
        hwm_before = _vm_hwm_kib(pid)
        results = _huge_publishes(stack, payload)
        growth = (_vm_hwm_kib(pid) - hwm_before) * 1024
        assert "max_packet_size" in Path(stack.broker.conf).read_text()
    print(f"{stack.kind}: {PARALLEL} x {HUGE} B publishes, server memory peak growth {growth / 1e6:.2f} MB")
    # Refused: no PUBACK, so mosquitto_pub does not exit 0 (it reports the lost connection).
    assert all(r.returncode != 0 for r in results), [(r.returncode, r.stderr[-200:]) for r in results]
    assert growth < GROWTH_BOUND, f"{stack.kind}: memory grew by {growth} bytes"
    stack.assert_good_device_still_stored("4 x 5 MB publishes")
    # Nothing of the refused messages reached the server's ingest: no rejection was counted for them.
    after = stack.counters()
    for name in ("telemetry_oversized", "telemetry_rejected"):
        assert after.get(name, 0) == before.get(name, 0), name


def test_publish_just_under_the_limit_still_passes(stack: Stack) -> None:  # noqa: F811
    """A publish well above a full batch but below MAX_PACKET_BYTES is acknowledged, and the
    connection stays up (it is the server's schema that rejects this one, and counts it)."""
    before = stack.counters().get("telemetry_rejected", 0)
    bad_id = stack.creds["bad"]["device_id"]
    bad = stack.connected("bad")
    payload = b'{"device_id":"' + bad_id.encode() + b'","messages":"' + b"y" * (MAX_PACKET_BYTES - 4096) + b'"}'
    info = bad.client.publish(device_topic(bad_id, "telemetry"), payload, qos=1)
    assert bad.pump(info.is_published, timeout=10.0), f"{stack.kind}: a {len(payload)}-byte publish was not acknowledged"
    assert not bad.closed
    wait_for(lambda: stack.counters().get("telemetry_rejected", 0) - before == 1, timeout=10,
             what=f"{stack.kind}: the under-limit bad batch reached the server and was counted")
    stack.assert_good_device_still_stored("an under-limit publish")
