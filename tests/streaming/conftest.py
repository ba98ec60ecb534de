"""Streaming fixtures: a real Tansu broker on a free 127.0.0.1 port (stopped by PID), churn events with repeats and bad rows.

Nothing here trusts the broker's end offsets: producers record each event's (partition, offset) from
its delivery report, and tests judge completeness from the database, never from the high watermark.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.runtimes.conftest import lr_result, make_bundle  # noqa: F401 - the compiled churn LR (onnx), re-signed versions
from tests.spark.conftest import batch_files  # noqa: F401 - the signed churn bundle as a .tar
from tests.support.postgres import postgres_url  # noqa: F401 - session PostgreSQL

ENTITY = "customerID"


@pytest.fixture()
def tansu() -> Iterator[Any]:
    from runtimes.spark.streaming_broker import start_tansu

    broker = start_tansu()
    try:
        yield broker
    finally:
        broker.stop()
        assert broker.process.poll() is not None


def create_topic(bootstrap: str, topic: str, partitions: int = 2) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    from runtimes.spark.streaming_kafka import client_conf

    admin = AdminClient(client_conf(bootstrap))
    for fut in admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)]).values():
        fut.result(30)


@dataclass
class Event:
    i: int
    entity: str
    value: bytes
    valid: bool
    bad_field: str | None  # the field a reject must name
    partition: int = -1
    offset: int = -1


def make_events(n: int, seed: int = 5, bad_every: int = 97) -> list[Event]:
    """n events over ~n/3 customers (so most customers repeat); every bad_every-th event is invalid in one of four ways."""
    from edgefleet_cli.samples.telco_churn import make_telco_churn

    rng = random.Random(seed)
    base = make_telco_churn(max(50, n // 3), seed=seed, missing_rate=0.0).drop(columns=["Churn"]).to_dict("records")
    out: list[Event] = []
    for i in range(n):
        rec = dict(rng.choice(base))
        rec["MonthlyCharges"] = round(float(rec["MonthlyCharges"]) * rng.uniform(0.8, 1.2), 2)
        rec["tenure"] = int(rec["tenure"]) + rng.randint(0, 3)
        rec = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in rec.items()}
        ent = str(rec[ENTITY])
        if i % bad_every == bad_every - 1:
            kind = (i // bad_every) % 4
            if kind == 0:
                rec["tenure"] = "abc"
                out.append(Event(i, ent, json.dumps(rec).encode(), False, "tenure"))
            elif kind == 1:
                rec[ENTITY] = ""
                out.append(Event(i, ent, json.dumps(rec).encode(), False, ENTITY))
            elif kind == 2:
                out.append(Event(i, ent, b"{not json", False, "value"))
            else:
                rec["SeniorCitizen"] = "maybe"
                out.append(Event(i, ent, json.dumps(rec).encode(), False, "SeniorCitizen"))
            continue
        out.append(Event(i, ent, json.dumps(rec).encode(), True, None))
    return out


def produce(bootstrap: str, topic: str, events: list[Event]) -> None:
    """Produce in order, keyed by customer; each event's (partition, offset) comes from its delivery report."""
    from confluent_kafka import Producer

    from runtimes.spark.streaming_kafka import client_conf

    p = Producer(client_conf(bootstrap, **{"linger.ms": 5, "enable.idempotence": False, "acks": "all",
                                           "max.in.flight.requests.per.connection": 1}))
    errors: list[str] = []

    def report(ev: Event) -> Any:
        def cb(err: Any, msg: Any) -> None:
            if err is not None:
                errors.append(str(err))
            else:
                ev.partition, ev.offset = int(msg.partition()), int(msg.offset())
        return cb

    for ev in events:
        p.produce(topic, key=ev.entity.encode(), value=ev.value, on_delivery=report(ev))
        p.poll(0)
    assert p.flush(60) == 0
    assert not errors, errors[:3]
    assert all(ev.offset >= 0 for ev in events)


def reference(bundle: Path, pubkey: Path, events: list[Event]) -> dict[int, float]:
    """event index -> the device runtime's probability, for every valid event."""
    from edgefleet.encoding import FileRule
    from runtimes.python import Scorer

    scorer = Scorer.from_bundle(bundle, pubkey)
    rule = FileRule(scorer.fields)
    return {ev.i: scorer.score(rule(json.loads(ev.value))).probability for ev in events if ev.valid}
