"""The OpenAPI 3.1 document for /api/v1. A test checks it lists exactly the app's routes."""

from __future__ import annotations

from typing import Any

ADMIN = [{"admin": []}]
DEVICE = [{"device": []}, {"admin": []}]


def _op(summary: str, security: list[Any] | None = None, body: str | None = None, ok: str = "200") -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": {ok: {"description": "success"}, "4XX": {"$ref": "#/components/responses/Error"}}}
    if security is not None:
        op["security"] = security
    if body:
        op["requestBody"] = {"required": True, "content": {body: {"schema": {}}}}
    return op


SPEC: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "edgefleet fleet server", "version": "1"},
    "components": {
        "securitySchemes": {"admin": {"type": "http", "scheme": "bearer"}, "device": {"type": "http", "scheme": "bearer"}},
        "responses": {"Error": {"description": "error", "content": {"application/json": {"schema": {
            "type": "object", "properties": {"error": {"type": "string", "description": "'<field or resource>: <reason>'"}}}}}}},
    },
    "paths": {
        "/healthz": {"get": _op("liveness")},
        "/api/v1/openapi.json": {"get": _op("this document")},
        "/api/v1/counters": {"get": _op("ingest and rejection counters", ADMIN)},
        "/api/v1/models": {"get": _op("list models and versions", ADMIN), "post": _op("upload a signed bundle (.tar body)", ADMIN, "application/x-tar", "201")},
        "/api/v1/models/{name}": {"get": _op("newest version with manifest", ADMIN)},
        "/api/v1/models/{name}/versions/{version}": {"get": _op("one version with manifest", ADMIN)},
        "/api/v1/models/{name}/predict": {"post": _op("score one record or a list; 422 names the bad field", ADMIN, "application/json")},
        "/api/v1/keys": {"post": _op("trust a publisher's Ed25519 public key (PEM body)", ADMIN, "application/x-pem-file", "201")},
        "/api/v1/artifacts/{sha256}": {"get": _op("bundle archive by sha256; ETag, Range, If-Range", DEVICE)},
        "/api/v1/enrollment-tokens": {"post": _op("create a one-time enrollment token", ADMIN, "application/json", "201")},
        "/api/v1/devices/enroll": {"post": _op("exchange an enrollment token for a device credential", None, "application/json", "201")},
        "/api/v1/devices": {"get": _op("list devices", ADMIN)},
        "/api/v1/devices/{device_id}": {"get": _op("one device with its assignment", ADMIN)},
        "/api/v1/devices/{device_id}/assignment": {"get": _op("signed assignment; ETag / If-None-Match", DEVICE)},
        "/api/v1/devices/{device_id}/status": {"post": _op("report status", DEVICE, "application/json", "204")},
        "/api/v1/devices/{device_id}/telemetry": {"post": _op("telemetry batch, idempotent by message id", DEVICE, "application/json")},
        "/api/v1/rollouts": {"get": _op("list rollouts", ADMIN), "post": _op("start a staged rollout", ADMIN, "application/json", "201")},
        "/api/v1/rollouts/{rollout_id}": {"get": _op("rollout status and progress", ADMIN)},
        "/api/v1/rollouts/{rollout_id}/{action}": {"post": _op("pause, resume, abort or rollback", ADMIN)},
        "/api/v1/models/{name}/policy": {"get": _op("monitoring policy (defaults when none is stored)", ADMIN),
                                         "put": _op("update the monitoring policy (partial object); 400 names the field", ADMIN, "application/json")},
        "/api/v1/models/{name}/drift": {"get": _op("drift per window and cohort; ?version=&start=&end=", ADMIN)},
        "/api/v1/models/{name}/performance": {"get": _op("realized and CBPE-estimated AUROC/AP per window and cohort; ?version=&start=&end=", ADMIN)},
        "/api/v1/alerts": {"get": _op("alerts, newest first; ?model=&state=firing|cleared&limit=", ADMIN)},
        "/api/v1/monitor/run": {"post": _op("run a monitor pass now; returns its fired/cleared events", ADMIN)},
        "/metrics": {"get": _op("Prometheus text exposition (admin token)", ADMIN)},
        "/api/v1/models/{name}/labeled": {"get": _op("labeled rows (features, label, score, model_version, device_id, ts) for retraining; ?start=&end=&version=&limit=", ADMIN)},
        "/api/v1/models/{name}/versions/{version}/approve": {"post": _op("approve a challenger registered with approval_required: starts its rollout", ADMIN, None, "201")},
        "/api/v1/models/{name}/retrains": {"get": _op("retrain jobs the monitor started, skipped or reaped", ADMIN)},
    },
}
