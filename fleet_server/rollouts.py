"""Staged rollouts, reconciled from the database so a server restart changes nothing.

A rollout targets the devices its selector matches (groups or tags; empty = every device),
in a stable pseudo-random order (sha256 of rollout id and device id), and walks its steps
(e.g. 10 -> 50 -> 100 percent). Each reconcile pass:

1. adds devices that joined since (they get the current target too, even after completion);
2. assigns the new version to targets inside the current step, choosing the one format each
   device reported it can run; a device that cannot run any is marked ``incapable`` with the
   reason, which the rollout status reports;
3. reads reported state: ``installed`` when the device runs the version and is healthy,
   ``failed`` when its install or health check was refused for this version; an ``installed``
   device that reports it fell back from this version gets it again (bounded redeliveries);
4. when every target of the step has settled (or ``step_timeout`` passed), evaluates the gates.
   The built-in gate bounds the install- and health-failure ratio; the Fleet's own
   ``fleet.gates`` registry adds more (``create_app`` registers the ML canary gate). A failing gate halts the rollout and rolls the
   devices it touched back to their previous version with a signed rollback assignment; a gate
   that answers ``Wait`` holds the step (no halt, no advance, even past the step timeout).

Pause stops new assignments, resume continues, abort stops for good, rollback returns every
touched device to its previous version. A rollout whose selector matches no enrolled device is
refused (409, naming the selector and the known groups and tags): it would only report
"completed, 0/0 installed".
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import re
import threading
import time
import weakref
from typing import Any, Callable

from sqlalchemy import func, insert, select, true

from fleet_server import devices as devmod
from fleet_server.core import Fleet
from fleet_server.db import Device, ModelVersion, Rollout, RolloutTarget, utcnow
from fleet_server.errors import Conflict, FleetError, NotFound
from fleet_server.model_versions import get_version
from fleet_server.validation import GATES as GATES_SCHEMA
from fleet_server.validation import MODEL_NAME, SELECTOR, STEPS, VERSION, check

SETTLED = {"installed", "failed", "incapable", "rolled_back"}
Gate = Callable[[Fleet, Rollout, list[RolloutTarget]], "str | None"]


class Wait(str):
    """A gate's "not yet" (e.g. the canary has too little telemetry): the step holds, neither
    halting nor advancing, and the gates are asked again on the next pass."""


def install_health_gate(fleet: Fleet, rollout: Rollout, targets: list[RolloutTarget]) -> str | None:
    done = [t for t in targets if t.state in ("installed", "failed")]
    if not done:
        return None
    failed = [t for t in done if t.state == "failed"]
    limit = float(rollout.gates.get("max_failure_ratio", 0.0))
    ratio = len(failed) / len(done)
    if ratio > limit:
        reasons = sorted({(t.reason or "")[:120] for t in failed})[:3]
        return f"install/health failures {len(failed)}/{len(done)} = {ratio:.0%} exceed {limit:.0%}: {'; '.join(reasons)}"
    return None


def _matches(dev: Device, selector: dict[str, Any]) -> bool:
    groups, tags = selector.get("groups") or [], selector.get("tags") or []
    if not groups and not tags:
        return True
    return dev.group in groups or bool(set(tags) & set(dev.tags or []))


def _order(rollout_id: int, device_id: str) -> int:
    return int(hashlib.sha256(f"{rollout_id}:{device_id}".encode()).hexdigest()[:12], 16)


def _event(r: Rollout, event: str, **kw: Any) -> None:
    r.history = [*r.history, {"ts": utcnow().isoformat() + "Z", "event": event, "step": r.step_index, **kw}]
    r.updated_at = utcnow()


def start(fleet: Fleet, model: str, version: int, *, selector: dict[str, Any] | None = None, steps: list[float] | None = None,
          gates: dict[str, Any] | None = None, approved: bool = False, reconcile_now: bool = True) -> Rollout:
    """Store a running rollout; with ``reconcile_now`` run a reconcile pass before returning (the
    served POST passes False and wakes the reconciler thread instead: fleet_server.api.rollouts)."""
    check(model, MODEL_NAME, "model")
    check(version, VERSION, "version")
    if selector is not None:
        check(selector, SELECTOR, "selector")
    if steps is not None:
        check(steps, STEPS, "steps")
    if gates is not None:
        check(gates, GATES_SCHEMA, "gates")
    mv = get_version(fleet, model, version)
    if ((mv.provenance or {}).get("approval") or {}).get("state") == "pending" and not approved:
        raise FleetError(f"version: {model} v{version} waits for approval; POST /api/v1/models/{model}/versions/{version}/approve")
    steps = [float(x) for x in (steps or [10, 50, 100])]
    if not steps or any(not 0 < x <= 100 for x in steps) or steps != sorted(steps) or steps[-1] != 100:
        raise FleetError(f"steps: {steps} must rise within (0, 100] and end at 100")
    with fleet.session() as s:
        _require_targets(s, selector or {})
        busy = s.scalars(select(Rollout).where(Rollout.model == model, Rollout.state.in_(["running", "paused"]))).first()
        if busy is not None:
            raise FleetError(f"model: rollout {busy.id} of {model} v{busy.version} is still {busy.state}; abort or finish it first")
        for old in s.scalars(select(Rollout).where(Rollout.model == model, Rollout.state == "completed")):
            old.state = "superseded"  # only the newest rollout hands its target to devices that join later
            _event(old, "superseded")
        r = Rollout(model=mv.name, version=mv.version, selector=selector or {}, steps=steps, gates=gates or {}, state="running", history=[])
        s.add(r)
        s.flush()
        _event(r, "started", steps=steps)
        _event(r, "step_started")
    _last_pass.pop(fleet, None)  # the pass that signs the new rollout's first step is not held back by the pacing,
    _kick(fleet).set()  # nor by a paced wait already under way
    if reconcile_now:
        reconcile(fleet)
    return r


def target_bound(fleet: Fleet, selector: dict[str, Any] | None) -> int:
    """At most how many devices ``selector`` matches now, from one COUNT (tags: every device)."""
    groups, tags = (selector or {}).get("groups") or [], (selector or {}).get("tags") or []
    q = select(func.count()).select_from(Device)
    if groups and not tags:
        q = q.where(Device.group.in_(groups))
    with fleet.session() as s:
        return int(s.scalar(q) or 0)


def _require_targets(s: Any, selector: dict[str, Any]) -> None:
    """Refuse a rollout that would reach nobody: it would report COMPLETED 100 % with 0/0 installed.

    Devices that join later still get a running or completed rollout's target (``_add_joined``);
    this only checks that the selector matches at least one device enrolled now.
    """
    groups, tags = selector.get("groups") or [], selector.get("tags") or []
    if not groups and not tags:  # every device: one indexed row is enough (10,000 ORM devices took ~0.2 s)
        if s.scalars(select(Device.device_id).limit(1)).first() is not None:
            return
    elif s.scalars(select(Device.device_id).where(Device.group.in_(groups)).limit(1)).first() is not None:
        return
    devices = list(s.scalars(select(Device)))
    if any(_matches(d, selector) for d in devices):
        return
    if not devices:
        raise Conflict("selector: no device is enrolled yet, so the rollout would reach nobody; enroll one first "
                       "(edgefleet devices token, then edgefleet agent enroll)")
    groups, tags = selector.get("groups") or [], selector.get("tags") or []
    asked = " or ".join(p for p in (f"groups {groups}" if groups else "", f"tags {tags}" if tags else "") if p)
    known = f"known groups: {', '.join(sorted({d.group for d in devices}))}"
    all_tags = sorted({t for d in devices for t in (d.tags or [])})
    if tags:
        known += f"; known tags: {', '.join(all_tags) or '(none)'}"
    raise Conflict(f"selector: {asked} match no enrolled device; {known}")


def _add_joined(s: Any, r: Rollout) -> int:
    """Give every matching device that has no target of ``r`` yet one (``pending``); returns how many.

    One NOT EXISTS query reads only those devices, as plain rows, and one multi-row INSERT stores
    their targets: the pass no longer loads every target and device of the rollout as ORM objects
    to find the few that joined (at 10,000 devices that was most of each pass's ~1 s under the
    server's GIL, starving the downloads and status storage the devices wait for).
    """
    has_target = (select(RolloutTarget.id)
                  .where(RolloutTarget.rollout_id == r.id, RolloutTarget.device_id == Device.device_id).exists())
    q = select(Device.device_id, Device.group, Device.tags, Device.active_version).where(~has_target)
    groups, tags = r.selector.get("groups") or [], r.selector.get("tags") or []
    if groups and not tags:
        q = q.where(Device.group.in_(groups))
    rows = [{"rollout_id": r.id, "device_id": d.device_id, "order": _order(r.id, d.device_id),
             "previous_version": d.active_version, "state": "pending"}
            for d in s.execute(q) if _matches(d, r.selector)]
    if rows:
        s.execute(insert(RolloutTarget), rows)
    return len(rows)


def _all_targets(s: Any, r: Rollout) -> list[RolloutTarget]:
    """Every target of ``r`` in rollout order: for the gates, a halt's or a rollback's walk (once per step, not per pass)."""
    return list(s.scalars(select(RolloutTarget).where(RolloutTarget.rollout_id == r.id)
                          .order_by(RolloutTarget.order, RolloutTarget.id)))


MAX_REDELIVERIES = 3


def _observe(t: RolloutTarget, dev: Any, version: int) -> None:
    """``dev``: a Device, or a row of ``_actionable`` (the same attribute names)."""
    if t.state == "installed":
        _check_fallback(t, dev, version)
        return
    if t.state != "assigned":
        return
    li = dev.last_install or {}
    if dev.active_version == version and (dev.health or "ok") == "ok":
        t.state, t.done_at = "installed", utcnow()
    elif li.get("version") == version and str(li.get("result", "")).startswith("refused"):
        t.state, t.reason, t.done_at = "failed", str(li.get("result"))[:500], utcnow()


def _check_fallback(t: RolloutTarget, dev: Any, version: int) -> None:
    """An installed device that reports it fell back from this version (its active artifact
    failed verification on load) is delivered the version again, at most ``MAX_REDELIVERIES``
    times; after that the target is ``failed`` with the device's reason, so the gates see it."""
    fb = (dev.status or {}).get("fallback") or {}
    if dev.active_version == version or fb.get("from_version") != version:
        return
    m = re.match(r"redelivery (\d+)/", t.reason or "")
    n = (int(m.group(1)) if m else 0) + 1
    why = str(fb.get("reason") or "no reason given")
    if n > MAX_REDELIVERIES:
        t.state, t.reason, t.done_at = "failed", f"fell back from v{version} after {n - 1} redeliveries: {why}"[:500], utcnow()
    else:
        t.state, t.reason = "pending", f"redelivery {n}/{MAX_REDELIVERIES}: fell back to v{fb.get('to_version')}: {why}"[:500]


def _rollback_targets(fleet: Fleet, s: Any, r: Rollout, targets: list[RolloutTarget], states: set[str]) -> int:
    back = [t for t in targets if t.state in states and t.previous_version is not None]
    wanted = sorted({t.previous_version for t in back if t.previous_version is not None})
    versions = {mv.version: mv for mv in s.scalars(select(ModelVersion).where(ModelVersion.name == r.model, ModelVersion.version.in_(wanted)))}
    back = [t for t in back if t.previous_version in versions]
    serials = devmod.last_serials(s, sorted({t.device_id for t in back}))
    n = 0
    for version, mv in versions.items():
        mine = [t for t in back if t.previous_version == version]
        devmod.issue_assignments(fleet, s, mv, [(t.device_id, t.format or "onnx") for t in mine], rollback=True, rollout_id=r.id,
                                 serials=serials)
        for t in mine:
            t.state = "rolled_back"
        n += len(mine)
    return n


def _step_started_at(r: Rollout) -> dt.datetime:
    for e in reversed(r.history):
        if e["event"] == "step_started":
            return dt.datetime.fromisoformat(e["ts"].rstrip("Z"))
    return r.created_at


def _step_bound(s: Any, r: Rollout, limit: int, n: int) -> tuple[int, int] | None:
    """``(order, id)`` of the last target inside the current step (the first ``limit`` of ``n`` in
    rollout order), or None when every target is inside it."""
    if limit >= n:
        return None
    if limit <= 0:
        return (-1, -1)  # no target is inside the step
    row = s.execute(select(RolloutTarget.order, RolloutTarget.id).where(RolloutTarget.rollout_id == r.id)
                    .order_by(RolloutTarget.order, RolloutTarget.id).offset(limit - 1).limit(1)).one()
    return int(row[0]), int(row[1])


def _in_step(bound: tuple[int, int] | None) -> Any:
    if bound is None:
        return true()
    return (RolloutTarget.order < bound[0]) | ((RolloutTarget.order == bound[0]) & (RolloutTarget.id <= bound[1]))


def _actionable(s: Any, r: Rollout, bound: tuple[int, int] | None, *, assign: bool) -> list[tuple[RolloutTarget, Any]]:
    """The targets a pass can change, each with its device's state as a plain row (active_version,
    health, last_install, status, capabilities), in rollout order; no other target or device is read.

    - ``pending`` inside the step (``assign``): to be assigned;
    - ``assigned`` whose device runs the version or reported after the assignment was issued
      (``last_seen >= assigned_at``): a device's state changes only with a stored status, so an
      assigned device that has not reported since cannot be observed as installed or refused.
      (The server's clock sets both; a refusal stored before its assignment, which the old
      full walk read as this assignment's, is now not taken for it.)
    - ``installed`` whose device no longer runs the version (the fallback check).

    A settled 10,000-device rollout costs a pass no row at all, and a rollout whose devices are
    downloading costs only the devices that reported since the previous pass.
    """
    cols = (Device.active_version, Device.health, Device.last_install, Device.status, Device.capabilities)
    moved = (Device.active_version.is_(None)) | (Device.active_version != r.version)
    reported = ((Device.active_version == r.version) | RolloutTarget.assigned_at.is_(None)
                | (Device.last_seen >= RolloutTarget.assigned_at))
    which = ((RolloutTarget.state == "assigned") & reported) | ((RolloutTarget.state == "installed") & moved)
    if assign:
        which = which | ((RolloutTarget.state == "pending") & _in_step(bound))
    q = (select(RolloutTarget, *cols).join(Device, RolloutTarget.device_id == Device.device_id)
         .where(RolloutTarget.rollout_id == r.id, which).order_by(RolloutTarget.order, RolloutTarget.id))
    return [(row[0], row) for row in s.execute(q)]


def _advance(fleet: Fleet, s: Any, r: Rollout, mv: ModelVersion, max_assignments: int | None = None) -> None:
    _add_joined(s, r)
    of_r = RolloutTarget.rollout_id == r.id
    n = int(s.scalar(select(func.count()).select_from(RolloutTarget).where(of_r)) or 0)
    limit = n if r.state == "completed" else math.ceil(r.steps[r.step_index] / 100.0 * n)
    bound = _step_bound(s, r, limit, n)
    rows = _actionable(s, r, bound, assign=True)
    for t, dev in rows:
        _observe(t, dev, r.version)
    todo = [(t, dev) for t, dev in rows if t.state == "pending" and (bound is None or (t.order, t.id) <= bound)]
    serials = devmod.last_serials(s, [t.device_id for t, _ in todo]) if todo else {}
    issued, held = 0, False
    batch: list[tuple[RolloutTarget, str]] = []
    for t, dev in todo:
        if max_assignments is not None and issued >= max_assignments:
            held = True
            break  # the rest stay pending (so the step cannot settle) until the next full pass
        if dev.active_version == r.version:
            t.state, t.step, t.done_at = "installed", r.step_index, utcnow()
            continue
        fmt, why = devmod.choose_format(dev.capabilities or {}, mv.formats)
        if fmt is None:
            if dev.capabilities:
                t.state, t.reason = "incapable", why
            continue
        batch.append((t, fmt))
        issued += 1
        if len(batch) == ASSIGN_BATCH:  # devices start downloading while the rest of the step is signed
            _issue(fleet, s, r, mv, batch, serials)
            fleet.commit_and_publish(s)
            batch = []
    _issue(fleet, s, r, mv, batch, serials)
    if r.state != "running" or held:
        return
    unsettled = int(s.scalar(select(func.count()).select_from(RolloutTarget)
                             .where(of_r, _in_step(bound), RolloutTarget.state.not_in(SETTLED))) or 0)
    timed_out = (utcnow() - _step_started_at(r)).total_seconds() > float(r.gates.get("step_timeout_seconds", fleet.cfg.step_timeout_seconds))
    if unsettled and not timed_out:
        return
    targets = _all_targets(s, r)
    for gate in (install_health_gate, *fleet.gates):
        reason = gate(fleet, r, targets)
        if isinstance(reason, Wait):
            last = r.history[-1] if r.history else {}
            if last.get("event") == "waiting" and last.get("step") == r.step_index:
                if last.get("reason") == reason:
                    return
                r.history = r.history[:-1]  # one waiting entry per step, with the newest reason
            _event(r, "waiting", reason=str(reason))
            return
        if reason:
            r.state, r.reason = "halted", reason
            n_back = _rollback_targets(fleet, s, r, targets, {"installed", "failed", "assigned"})
            _event(r, "halted", reason=reason, rolled_back=n_back)
            return
    if unsettled:
        _event(r, "step_timeout", waiting=unsettled)
    if r.step_index + 1 < len(r.steps):
        r.step_index += 1
        _event(r, "step_started")
    else:
        r.state = "completed"
        _event(r, "completed")


ASSIGN_BATCH = 100  # assignments signed, stored and published per commit of a pass


def _issue(fleet: Fleet, s: Any, r: Rollout, mv: ModelVersion, batch: list[tuple[RolloutTarget, str]], serials: dict[str, int]) -> None:
    devmod.issue_assignments(fleet, s, mv, [(t.device_id, fmt) for t, fmt in batch], rollout_id=r.id, serials=serials)
    now = utcnow()
    for t, fmt in batch:
        t.state, t.format, t.step, t.assigned_at = "assigned", fmt, r.step_index, now
        serials[t.device_id] = serials.get(t.device_id, 0) + 1


_last_pass: "weakref.WeakKeyDictionary[Fleet, tuple[float, float]]" = weakref.WeakKeyDictionary()  # fleet -> (end, seconds)
_kicks_lock = threading.Lock()
_kicks: "weakref.WeakKeyDictionary[Fleet, threading.Event]" = weakref.WeakKeyDictionary()  # ends a paced wait early
PACE_FACTOR = 1.0  # a full pass waits this many times as long as the one before it took ...
PACE_MAX_WAIT = 2.0  # ... but never more than this many seconds


def _kick(fleet: Fleet) -> threading.Event:
    with _kicks_lock:
        return _kicks.setdefault(fleet, threading.Event())


def reconcile(fleet: Fleet, *, rollout_id: int | None = None, max_assignments: int | None = None) -> None:
    """One pass over every active rollout (and completed ones, for devices that join later).

    ``rollout_id`` limits the pass to one rollout and ``max_assignments`` bounds the assignments
    it signs: the start POST's inline pass, which leaves the rest of a large step to the reconciler.

    A full pass (no ``rollout_id``) starts no sooner after the previous one ended than
    ``PACE_FACTOR`` times what that one took (at most ``PACE_MAX_WAIT``): the reconciler is woken
    by every stored status batch, and a pass over 10,000 targets takes about a second, so
    back-to-back passes would hold the server's GIL most of the time and starve the artifact
    downloads and status storage they wait for. 1:1 it stays: 6:1 made bench/rollout.py's staged
    10/50/100 run at 1,000 devices complete in 10.3 s instead of 2.4 s (each step waits for a
    pass), and at 10,000 devices 3:1 and 6:1 gave p95 23.2 and 27.7 s against 30.0 s at 1:1 (one
    run each at load 2-3: within the noise). ``start`` clears the pacing
    and ends a paced wait, so a new rollout's first pass (which signs its step) is never held
    back. A small fleet's passes take
    milliseconds and are not delayed noticeably.
    """
    if rollout_id is None:
        end, took = _last_pass.get(fleet, (0.0, 0.0))
        wait = min(end + PACE_FACTOR * took - time.monotonic(), PACE_MAX_WAIT)
        if wait > 0:
            kick = _kick(fleet)
            kick.wait(wait)
            kick.clear()
    t0 = time.monotonic()
    try:
        _reconcile(fleet, rollout_id, max_assignments)
    finally:
        if rollout_id is None:
            _last_pass[fleet] = (time.monotonic(), time.monotonic() - t0)


def _reconcile(fleet: Fleet, rollout_id: int | None, max_assignments: int | None) -> None:
    with fleet.lock, fleet.session() as s:
        q = select(Rollout).where(Rollout.state.in_(["running", "paused", "completed"]))
        if rollout_id is not None:
            q = q.where(Rollout.id == rollout_id)
        for r in s.scalars(q).all():
            mv = s.scalars(select(ModelVersion).where(ModelVersion.name == r.model, ModelVersion.version == r.version)).first()
            if mv is None:
                continue
            if r.state == "paused":  # observed, never assigned
                _add_joined(s, r)
                for t, dev in _actionable(s, r, None, assign=False):
                    _observe(t, dev, r.version)
                continue
            _advance(fleet, s, r, mv, max_assignments)


def control(fleet: Fleet, rollout_id: int, action: str) -> Rollout:
    with fleet.lock, fleet.session() as s:
        r = s.get(Rollout, rollout_id)
        if r is None:
            raise NotFound(f"rollout: {rollout_id} does not exist")
        allowed = {"pause": {"running"}, "resume": {"paused"}, "abort": {"running", "paused"},
                   "rollback": {"running", "paused", "halted", "completed", "aborted"}}
        if action not in allowed:
            raise FleetError(f"action: {action!r} is not one of {sorted(allowed)}")
        if r.state not in allowed[action]:
            raise FleetError(f"action: cannot {action} a rollout that is {r.state}")
        if action == "rollback":
            _add_joined(s, r)
            targets = _all_targets(s, r)
            n = _rollback_targets(fleet, s, r, targets, {"installed", "failed", "assigned"})
            r.state = "rolled_back"
            _event(r, "rolled_back", devices=n)
        else:
            r.state = {"pause": "paused", "resume": "running", "abort": "aborted"}[action]
            _event(r, action)
    return r


def status(fleet: Fleet, rollout_id: int) -> dict[str, Any]:
    with fleet.session() as s:
        r = s.get(Rollout, rollout_id)
        if r is None:
            raise NotFound(f"rollout: {rollout_id} does not exist")
        # counts from one GROUP BY and only the incapable/failed rows loaded: a poll of a
        # 10,000-device rollout no longer loads 10,000 ORM targets (1.5 s of the server's CPU)
        of_r = RolloutTarget.rollout_id == r.id
        counts = {state: int(k) for state, k in s.execute(select(RolloutTarget.state, func.count()).where(of_r)
                                                          .group_by(RolloutTarget.state).order_by(RolloutTarget.state))}
        listed = select(RolloutTarget.device_id, RolloutTarget.reason).order_by(RolloutTarget.id)
        incapable = [{"device_id": d, "reason": why} for d, why in s.execute(listed.where(of_r, RolloutTarget.state == "incapable"))]
        failed = [{"device_id": d, "reason": why} for d, why in s.execute(listed.where(of_r, RolloutTarget.state == "failed").limit(50))]
    n = sum(counts.values())
    return {
        "id": r.id, "model": r.model, "version": r.version, "state": r.state, "reason": r.reason,
        "step_index": r.step_index, "steps": r.steps, "selector": r.selector, "gates": r.gates,
        "targets": n, "counts": counts, "progress": (counts.get("installed", 0) / n) if n else 0.0,
        "incapable": incapable, "failed": failed, "history": r.history,
    }


def list_all(fleet: Fleet) -> list[dict[str, Any]]:
    with fleet.session() as s:
        ids = [r.id for r in s.scalars(select(Rollout).order_by(Rollout.id.desc()))]
    return [status(fleet, i) for i in ids]


def reach_warnings(fleet: Fleet, name: str, version: int, formats: list[str]) -> list[str]:
    """Why a just-published version would reach fewer devices than the fleet has, one line each.

    Compared with what each device last reported it can run (``capabilities`` in its status,
    the same field a rollout's ``choose_format`` reads); a device that has not reported yet is
    not counted either way, and a fleet with no device yet gets no warning.
    """
    with fleet.session() as s:
        devices = [d for d in s.scalars(select(Device)) if d.capabilities]
    if not devices:
        return []
    cannot = [d for d in devices if devmod.choose_format(d.capabilities or {}, formats)[0] is None]
    if not cannot:
        return []
    runs = sorted({f for d in cannot for f in (d.capabilities.get("formats") or d.capabilities.get("backends") or [])})
    if len(cannot) == len(devices):
        return [f"no enrolled device can run {name} v{version}: the bundle offers {sorted(formats)}, the {len(devices)} device(s) "
                f"that reported run {runs}; compile it with --targets {','.join(runs) or 'onnx'}"]
    ids = ", ".join(d.device_id for d in cannot[:5]) + (", ..." if len(cannot) > 5 else "")
    return [f"{len(cannot)} of {len(devices)} device(s) cannot run {name} v{version} ({ids}): they run {runs}, the bundle offers "
            f"{sorted(formats)}; a rollout marks them incapable"]
