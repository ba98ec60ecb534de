"""Telemetry ingest rate of the fleet server vs raw Mosquitto QoS1 throughput, in the same run.

Issue 5, "Must show": a real Mosquitto and a real FleetServer (SQLite, its paho MQTT bridge)
on loopback. One child process runs the publishers (aiomqtt, one client per simulated device),
each keeping a window of QoS1 publishes in flight. Every MQTT message is one telemetry batch of
``--batch`` prediction messages shaped as runtimes/python/telemetry.py makes them (uuid-like id,
kind, created, body with score, label, model version, entity id and the raw features).

(a) raw: the same publishers send the same kind of payloads on ``bench/raw/<device>/telemetry``
    to one paho subscriber (QoS1), which only counts: Mosquitto + Python MQTT clients, no storage;
(b) server: the devices publish on their own ``edgefleet/v1/devices/<id>/telemetry`` topics; the
    server's bridge validates and stores them. Rate = records stored / (first publish -> the
    last record visible in the counters endpoint). Then every message id sent is looked up in
    the telemetry table: 0 lost means each one is stored exactly once.

Ratio = server batches/s ÷ raw MQTT messages/s (target ≥ 50%, 0 lost).

    .venv/bin/python bench/ingest.py [--devices 10] [--messages 1500] [--batch 100] [--window 32]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hashlib
import json
import multiprocessing as mp
import shutil
import sqlite3
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from _fleet import counters, enroll_many, features, start_mosquitto, start_server

TARGET_RATIO = 0.5
TARGET_STORAGE = 0.70  # issue 13: stored records/s >= 70 % of the storage engine's own limit on the same rows and schema


def sqlite_limit(tmp: Path, batches: list[tuple[int, bytes]], devices: list[str]) -> dict[str, Any]:
    """The storage limit, in this run: plain ``sqlite3`` ``executemany`` of the rows the server stores
    (the same telemetry table, created from fleet_server.db's own metadata: text id key, its indexes,
    the whole JSON body), WAL, 1,000-row commits; JSON parsing of the batches is timed apart."""
    import datetime as _dt

    from sqlalchemy import create_engine

    from fleet_server.db import TelemetryRecord

    path = tmp / "limit.sqlite"
    eng = create_engine(f"sqlite:///{path}")
    TelemetryRecord.__table__.create(eng)  # type: ignore[attr-defined]
    eng.dispose()
    t0 = time.perf_counter()
    parsed = [json.loads(p) for _, p in batches]
    parse_s = time.perf_counter() - t0
    now = _dt.datetime.now(_dt.timezone.utc).replace(tzinfo=None).isoformat(sep=" ")
    rows = [(m["id"], devices[d], m["kind"], m["created"], now, m["body"].get("model"), m["body"].get("model_version"),
             m["body"].get("entity_id"), m["body"].get("score"), str(m["body"].get("label")), json.dumps(m["body"]))
            for (d, _), b in zip(batches, parsed) for m in b["messages"]]
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    sql = ("INSERT INTO telemetry (id, device_id, kind, created, received_at, model, model_version, entity_id, score, label, body) "
           "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING")
    t0 = time.perf_counter()
    for i in range(0, len(rows), 1000):
        db.executemany(sql, rows[i:i + 1000])
        db.commit()
    secs = time.perf_counter() - t0
    db.close()
    return {"rows": len(rows), "rate": len(rows) / secs, "secs": secs, "parse_rate": len(rows) / parse_s}


def msg_id(tag: str, b: int, j: int) -> str:
    """Deterministic 32-hex ids (the shape of the agent's uuid4().hex), so the parent can check them."""
    return hashlib.md5(f"{tag}:{b}:{j}".encode()).hexdigest()


def make_batches(tag: str, devices: list[str], n: int, size: int, records: list[dict[str, Any]]) -> list[tuple[int, bytes]]:
    """n batches, round-robin over devices: (device index, JSON payload)."""
    out = []
    now = time.time()
    iso = dt.datetime.fromtimestamp(now, dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    for b in range(n):
        d = b % len(devices)
        dev = devices[d]
        msgs = []
        for j in range(size):
            rec = records[(b * size + j) % len(records)]
            score = ((b * 7919 + j * 104729) % 10000) / 10000.0
            body = {"device_id": dev, "ts": iso, "model": "churn", "model_version": 1, "score": score, "label": int(score > 0.5),
                    "sample_rate": 1.0, "entity_id": f"C{b:05d}-{j:03d}", "features": rec}
            msgs.append({"id": msg_id(tag, b, j), "kind": "prediction", "created": now + j * 1e-3, "body": body})
        out.append((d, json.dumps({"device_id": dev, "sent_at": iso, "messages": msgs}).encode()))
    return out


# --------------------------------------------------------------------------- publishers (child)

async def _publish(cfg: dict[str, Any], batches: list[tuple[int, bytes]], topic_fmt: str) -> tuple[float, float]:
    import logging

    import aiomqtt

    quiet = logging.getLogger("bench.aiomqtt")
    quiet.setLevel(logging.ERROR)  # aiomqtt warns "There are N pending publish calls" for any window > 10

    devs = cfg["devices"]
    per: list[list[bytes]] = [[] for _ in devs]
    for d, payload in batches:
        per[d].append(payload)

    async def one(i: int, dev: str, token: str) -> None:
        async with aiomqtt.Client(cfg["host"], cfg["port"], identifier=f"edgefleet-device-{dev}", username=dev, password=token,
                                  clean_session=True, keepalive=120, max_inflight_messages=cfg["window"], timeout=120,
                                  logger=quiet) as c:
            await started.wait()
            sem = asyncio.Semaphore(cfg["window"])

            async def pub(p: bytes) -> None:
                try:
                    await c.publish(topic_fmt.format(dev=dev), p, qos=1)
                finally:
                    sem.release()

            tasks = []
            for p in per[i]:
                await sem.acquire()
                tasks.append(asyncio.create_task(pub(p)))
            await asyncio.gather(*tasks)

    started = asyncio.Event()
    runners = [asyncio.create_task(one(i, d, t)) for i, (d, t) in enumerate(zip(devs, cfg["tokens"]))]
    await asyncio.sleep(1.0)  # let every client connect before the clock starts
    t0 = time.time()
    started.set()
    await asyncio.gather(*runners)
    return t0, time.time()


def publisher_process(conn: Any, cfg: dict[str, Any]) -> None:
    records = cfg["records"]
    while True:
        cmd = conn.recv()
        if cmd[0] == "stop":
            return
        _, tag, topic_fmt, n, size, repeat = cmd
        batches = make_batches(tag, cfg["devices"], n, size, records) * repeat
        conn.send(("generated", sum(len(p) for _, p in batches)))
        t0, t1 = asyncio.run(_publish(cfg, batches, topic_fmt))
        conn.send(("published", t0, t1))


# --------------------------------------------------------------------------- parent

def raw_phase(conn: Any, broker: Any, n: int, size: int, repeat: int) -> dict[str, Any]:
    """Publish n distinct batches of ``size`` messages, ``repeat`` times over; the subscriber counts arrivals."""
    import paho.mqtt.client as mqtt

    state = {"n": 0, "last": 0.0}
    total = n * repeat
    done = threading.Event()

    def on_message(client: Any, userdata: Any, msg: Any) -> None:
        state["n"] += 1
        state["last"] = time.time()
        if state["n"] >= total:
            done.set()

    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-raw-subscriber", clean_session=True)
    sub.on_message = on_message
    subscribed = threading.Event()
    sub.on_subscribe = lambda *a, **k: subscribed.set()
    sub.max_inflight_messages_set(1000)
    sub.connect(broker.host, broker.port, keepalive=60)
    sub.loop_start()
    try:
        sub.subscribe("bench/raw/+/telemetry", qos=1)
        subscribed.wait(10)
        conn.send(("publish", "raw", "bench/raw/{dev}/telemetry", n, size, repeat))
        _, nbytes = conn.recv()
        _, t0, t_pub = conn.recv()
        done.wait(60)
    finally:
        sub.disconnect()
        sub.loop_stop()
    secs = state["last"] - t0
    return {"n": state["n"], "total": total, "secs": secs, "rate": state["n"] / secs, "bytes": nbytes / total, "pub_secs": t_pub - t0}


def server_phase(conn: Any, server: Any, n: int, batch: int, devices: list[str], stall: float = 15.0) -> dict[str, Any]:
    before = counters(server)
    want = n * batch
    conn.send(("publish", "srv", "edgefleet/v1/devices/{dev}/telemetry", n, batch, 1))
    _, nbytes = conn.recv()
    _, t0, t_pub = conn.recv()
    got, last_change, t_done = 0, time.monotonic(), time.time()
    while got < want and time.monotonic() - last_change < stall:
        time.sleep(0.05)
        now = counters(server).get("telemetry_accepted", 0) - before.get("telemetry_accepted", 0)
        if now != got:
            got, last_change, t_done = now, time.monotonic(), time.time()
    after = counters(server)
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in set(after) | set(before) if after.get(k, 0) != before.get(k, 0)}

    db = sqlite3.connect(f"file:{server.fleet.data_dir / 'fleet.sqlite'}?mode=ro", uri=True)
    try:
        stored = [r[0] for r in db.execute("SELECT id FROM telemetry WHERE device_id IN (%s)" % ",".join("?" * len(devices)), devices)]
    finally:
        db.close()
    expected = {msg_id("srv", b, j) for b in range(n) for j in range(batch)}
    stored_set = set(stored)
    secs = t_done - t0
    return {"records": got, "secs": secs, "rate": got / secs, "batches_rate": got / batch / secs, "bytes": nbytes,
            "pub_secs": t_pub - t0, "rows": len(stored), "distinct": len(stored_set), "lost": len(expected - stored_set),
            "extra": len(stored_set - expected), "counters": delta, "queue_left": server.bridge.queue.qsize(),
            "bridge_error": getattr(server.bridge, "last_error", None)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=10, help="publishing clients (one per simulated device)")
    ap.add_argument("--messages", type=int, default=1500, help="MQTT messages (telemetry batches) per phase")
    ap.add_argument("--batch", type=int, default=100, help="prediction messages per batch")
    ap.add_argument("--window", type=int, default=32, help="QoS1 publishes in flight per client")
    ap.add_argument("--raw-repeat", type=int, default=4, help="the raw phases send their batches this many times over (a longer, steadier sample)")
    args = ap.parse_args()
    t_start = time.perf_counter()

    tmp = Path(tempfile.mkdtemp(prefix="edgefleet-ingest-"))
    broker = server = proc = conn = None
    try:
        broker = start_mosquitto(tmp)
        from edgefleet import keys  # the server needs no model here; it trusts one throwaway publisher key

        _, pub_key = keys.generate_keypair(tmp / "keys")
        server = start_server(tmp, pub_key, mqtt_url=broker.url)
        if not server.bridge.connected.wait(10):
            raise RuntimeError("the server's MQTT bridge did not connect to Mosquitto")
        creds = enroll_many(server, args.devices, prefix="ing")
        devices = [c["device_id"] for c in creds]
        records = features(500)

        ctx = mp.get_context("spawn")
        conn, child = ctx.Pipe()
        cfg = {"host": broker.host, "port": broker.port, "devices": devices, "tokens": [c["token"] for c in creds],
               "batch": args.batch, "window": args.window, "records": records}
        proc = ctx.Process(target=publisher_process, args=(child, cfg), daemon=True)
        proc.start()

        raw = raw_phase(conn, broker, args.messages, args.batch, args.raw_repeat)
        small = raw_phase(conn, broker, args.messages, 1, args.raw_repeat)
        srv = server_phase(conn, server, args.messages, args.batch, devices)

        print(f"ingest bench: {args.devices} aiomqtt publishers (one child process, {args.window} QoS1 in flight each) -> Mosquitto "
              f"on loopback; each MQTT message is a telemetry batch of {args.batch} prediction messages ({raw['bytes'] / 1024:.1f} KiB)")
        print(f"\n{'phase':46} {'MQTT msg/s':>10} {'records/s':>10} {'MB/s':>6} {'seconds':>8}")

        def line(label: str, rate: float, per: int, kib: float, secs: float, note: str) -> None:
            print(f"{label:46} {rate:10.0f} {rate * per:10.0f} {rate * kib / 1024:6.1f} {secs:8.2f}   {note}")

        line("(a) raw Mosquitto QoS1 -> 1 paho subscriber", raw["rate"], args.batch, raw["bytes"] / 1024, raw["secs"],
             f"({raw['n']}/{raw['total']} received; publishers done in {raw['pub_secs']:.2f}s)")
        line("(b) FleetServer bridge -> SQLite, stored", srv["batches_rate"], args.batch, raw["bytes"] / 1024, srv["secs"],
             f"({srv['records']}/{args.messages * args.batch} records; publishers done in {srv['pub_secs']:.2f}s)")
        line("(context) raw, 1 prediction per MQTT message", small["rate"], 1, small["bytes"] / 1024, small["secs"],
             f"({small['n']}/{small['total']} received, {small['bytes']:.0f} B each)")
        ratio = srv["batches_rate"] / raw["rate"]
        print(f"\nserver / raw in MQTT messages/s (same {args.batch}-message batches): {ratio:.1%}")
        print(f"server records/s / raw MQTT msg/s of 1-prediction messages: {srv['rate'] / small['rate']:.0%} (the other way to read the target)")
        print(f"loss check: {srv['rows']} rows for these devices, {srv['distinct']} distinct ids, {srv['lost']} of "
              f"{args.messages * args.batch} ids missing, {srv['extra']} unexpected; counter changes {dict(sorted(srv['counters'].items()))}"
              f"; bridge queue left {srv['queue_left']}" + (f"; last bridge error {srv['bridge_error']}" if srv["bridge_error"] else ""))
        ok_lost = srv["lost"] == 0 and srv["rows"] == args.messages * args.batch
        lim = sqlite_limit(tmp, make_batches("limit", devices, args.messages, args.batch, records), devices)
        share = srv["rate"] / lim["rate"]
        print(f"storage limit (same rows, same telemetry table, plain sqlite3 executemany, WAL, 1,000-row commits): "
              f"{lim['rate']:.0f} rows/s ({lim['rows']} rows in {lim['secs']:.2f}s); json.loads of the batches alone {lim['parse_rate']:.0f} records/s")
        print(f"target: stored >= {TARGET_STORAGE:.0%} of the SQLite limit and 0 lost: "
              f"{'PASS' if share >= TARGET_STORAGE and ok_lost else 'FAIL'} ({srv['rate']:.0f} / {lim['rate']:.0f} = {share:.0%}); "
              "PostgreSQL COPY limit: not measured by this bench yet")
        print(f"target: ingest >= {TARGET_RATIO:.0%} of raw (MQTT messages/s) and 0 lost: "
              f"{'PASS' if ratio >= TARGET_RATIO and ok_lost else 'FAIL'} ({ratio:.1%} of raw; "
              f"{'0 lost' if ok_lost else str(srv['lost']) + ' lost'}); total {time.perf_counter() - t_start:.0f} s")
    finally:
        if conn is not None and proc is not None and proc.is_alive():
            try:
                conn.send(("stop",))
            except OSError:
                pass
            proc.join(10)
            if proc.is_alive():
                proc.terminate()
        if server is not None:
            server.stop()
        if broker is not None:
            broker.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
