"""Monitoring tables: per-model policies and alerts.

They share ``fleet_server.db.Base`` so Alembic (``migrations/env.py`` imports this module) and
``init_db`` see them; the schema comes from migration ``0002_monitoring``.

An ``Alert`` row is one episode: it is created ``firing`` when the hysteresis fires and turns
``cleared`` (with ``cleared_at``) when it clears, so at most one row per (model, version,
cohort, kind, subject) is firing at a time. That is what makes a monitor run idempotent.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, DateTime, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from fleet_server.db import Base, utcnow


class MonitorPolicy(Base):
    __tablename__ = "monitor_policies"

    model: Mapped[str] = mapped_column(String(128), primary_key=True)
    policy: Mapped[dict[str, Any]] = mapped_column(JSON)  # validated by monitoring.policy
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class Alert(Base):
    __tablename__ = "alerts"
    __table_args__ = (Index("ix_alerts_model_state", "model", "state"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model: Mapped[str] = mapped_column(String(128))
    version: Mapped[int] = mapped_column(Integer)
    cohort: Mapped[str] = mapped_column(String(256))
    kind: Mapped[str] = mapped_column(String(16))        # drift | performance | fairness
    subject: Mapped[str] = mapped_column(String(128))    # a field, "<score>", or a metric name
    state: Mapped[str] = mapped_column(String(16))       # firing | cleared
    details: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    cleared_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
