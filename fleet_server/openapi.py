"""The OpenAPI 3.1 document for /api/v1. A test checks it lists exactly the app's routes.

Request bodies are the schemas the server checks them against (``fleet_server.validation``),
so the document and the checks cannot drift; path parameters are declared from each path
template; every operation has a typed success response and the common error shape
``{"error": "<field>: <reason>"}`` for 4XX. tests/fleet_server/test_fuzz.py validates the
document and runs schemathesis against a real server with it.
"""

from __future__ import annotations

import re
from typing import Any

from fleet_server import validation as v
from fleet_server.api import cdsw, scores, v2
from fleet_server.c2 import protocol as c2

ADMIN: list[dict[str, list[str]]] = [{"admin": []}]
DEVICE: list[dict[str, list[str]]] = [{"device": []}, {"admin": []}]
PUBLIC: list[Any] = []
SCORES_KEY: list[dict[str, list[str]]] = [{"scores_key": []}, {"admin": []}]  # a read-only scores:read API key
AGENT: list[dict[str, list[str]]] = [{"device": []}, {"basic": []}]  # a C2 agent: its device token as bearer or Basic password

S: dict[str, Any] = {"type": "string"}
INT: dict[str, Any] = {"type": "integer"}
N: dict[str, Any] = {"type": "number"}
OBJ: dict[str, Any] = {"type": "object"}
ARR: dict[str, Any] = {"type": "array"}


def _null(schema: dict[str, Any]) -> dict[str, Any]:
    return {**schema, "type": [schema["type"], "null"]}


def _obj(required: list[str], **props: Any) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": props}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


PATH_PARAMS: dict[str, dict[str, Any]] = {
    # looked up, not created, by these routes: any other string is a 404 (or 403 for another device)
    "name": {"type": "string", "description": f"a registered model name (at most {v.MAX_NAME_CHARS} characters)"},
    "version": v.VERSION,
    "device_id": {"type": "string", "description": f"an enrolled device id ({v.DEVICE_ID_PATTERN})"},
    "rollout_id": {"type": "integer", "minimum": 0, "maximum": v.MAX_DB_INT},
    "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
    "action": {"type": "string", "enum": ["abort", "pause", "resume", "rollback"]},
    "token": {"type": "string", "description": "a C2 agent's device token, in the path (the Java agent cannot send a header)"},
    "entity_id": {"type": "string", "maxLength": scores.MAX_ENTITY_CHARS, "description": "the entity (customer) id batch-score stored"},
    "key_id": {"type": "string", "pattern": scores.KEY_ID_PATTERN, "description": "an API key's public id"},
}
UNIX = {"type": "number", "minimum": 0, "maximum": 1e11, "description": "unix seconds"}
Q_VERSION = ("version", v.VERSION)
Q_WIDTH = ("window_seconds", {"type": "integer", "minimum": 60, "maximum": 366 * 86_400})  # view-only regrouping (the dashboard's picker)
Q_WINDOW = [("start", UNIX), ("end", UNIX)]

SCHEMAS: dict[str, Any] = {
    "Error": _obj(["error"], error={"type": "string", "description": "'<field or resource>: <reason>'"}),
    "Model": _obj(["name", "version", "sha256", "size", "formats", "key_id"],
                  name=S, version=INT, sha256=S, size=INT, formats={"type": "array", "items": S}, key_id=S,
                  created_at=_null(S), uploaded_at=S, parity=ARR, metrics=OBJ, provenance=_null(OBJ),
                  manifest=OBJ, variants=OBJ),
    "Device": _obj(["device_id", "group", "tags", "enrolled_at"],
                   device_id=S, group=S, tags={"type": "array", "items": S}, enrolled_at=S, last_seen=_null(S),
                   active_model=_null(S), active_version=_null(INT), health=_null(S), capabilities=_null(OBJ),
                   last_install=_null(OBJ), status=_null(OBJ), assignment=_null(OBJ)),
    "Rollout": _obj(["id", "model", "version", "state", "steps", "targets", "counts", "progress", "history"],
                    id=INT, model=S, version=INT, state=S, reason=_null(S), step_index=INT, steps={"type": "array", "items": N},
                    selector=OBJ, gates=OBJ, targets=INT, counts={"type": "object", "additionalProperties": INT}, progress=N,
                    incapable=ARR, failed=ARR, history=ARR),
    "Prediction": _obj(["probability", "model_version"], probability=N, label={}, model_version=INT),
    "Assignment": _obj(["assignment", "key_id", "signature"], assignment=OBJ, key_id=S, signature=S),
    "Report": {"type": "object", "properties": {"start": N, "end": _null(N)}},
}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _op(summary: str, security: list[Any], ok: str = "200", out: dict[str, Any] | None = None, *, body: Any = None,
        ctype: str = "application/json", body_required: bool = True, query: list[tuple[str, dict[str, Any]]] = (),  # type: ignore[assignment]
        extra: dict[str, Any] | None = None) -> dict[str, Any]:
    success: dict[str, Any] = {"description": "success"}
    if out is not None:
        success["content"] = out if "schema" not in out else _json(out["schema"])
    op: dict[str, Any] = {"summary": summary, "security": security,
                          "responses": {ok: success, **(extra or {}), "4XX": {"$ref": "#/components/responses/Error"}}}
    if body is not None:
        op["requestBody"] = {"required": body_required, "content": {ctype: {"schema": v.public(body)}}}
    if query:
        op["parameters"] = [{"name": n, "in": "query", "required": False, "schema": s} for n, s in query]
    return op


def _js(schema: dict[str, Any]) -> dict[str, Any]:
    return {"schema": schema}


def _list(key: str, item: dict[str, Any]) -> dict[str, Any]:
    return _js(_obj([key], **{key: {"type": "array", "items": item}}))


_ROLL = _js(_ref("Rollout"))
_TAR = {"application/x-tar": {"schema": {"type": "string", "format": "binary"}}}

_CHECKS = {"type": "object", "additionalProperties": _obj(["ok", "detail"], ok={"type": "boolean"}, detail=S)}
_READY = _obj(["ready", "checks"], ready={"const": True}, checks=_CHECKS)

_ENROLL_REQUEST: dict[str, Any] = v.ENROLL_REQUEST
_ENROLL_PROPS: dict[str, Any] = dict(_ENROLL_REQUEST["properties"])
_ENROLL_PROPS["kind"] = {"type": "string", "enum": ["agent", "minifi"], "description": "minifi: a MiNiFi/NiFi C2 agent (docs/minifi.md); default agent"}
_ENROLL_BODY = {**_ENROLL_REQUEST, "properties": _ENROLL_PROPS}
_C2_OPS = _js(_obj(["requestedOperations"], requestedOperations={"type": "array", "items": _obj(
    ["identifier", "operation", "operand", "args"], identifier=S, operation={"type": "string", "enum": ["SYNC", "UPDATE"]},
    operand={"type": "string", "enum": ["resource", "asset"]}, args=OBJ)}))
_C2_ACK = _js(_obj(["operationId", "state", "applied"], operationId=S, state=S, applied={"type": "boolean"}))
_C2_HB = "C2 heartbeat of a MiNiFi agent (Basic user-info, bearer or path token); answers the operations to run"
_C2_AK = "C2 acknowledgement of one operation; FULLY_APPLIED installs, NOT_APPLIED/PARTIALLY_APPLIED fail the install"
_C2_PATHS: dict[str, dict[str, Any]] = {
    "/c2-protocol/heartbeat": {"post": _op(_C2_HB, AGENT, out=_C2_OPS, body=c2.HEARTBEAT)},
    "/c2-protocol/acknowledge": {"post": _op(_C2_AK, AGENT, out=_C2_ACK, body=c2.ACK)},
    "/c2-protocol/agent/{token}/heartbeat": {"post": _op(_C2_HB, PUBLIC, out=_C2_OPS, body=c2.HEARTBEAT)},
    "/c2-protocol/agent/{token}/acknowledge": {"post": _op(_C2_AK, PUBLIC, out=_C2_ACK, body=c2.ACK)},
    "/c2-protocol/assets/{sha256}": {"get": _op(
        "a C2 asset (slim bundle or publisher key) by sha256; ?agent=&sig= from the SYNC/UPDATE url, or the agent's credential; "
        "409 if the stored bytes no longer match", [*AGENT, {}], out={"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        query=[("agent", {"type": "string", "maxLength": 64}), ("sig", {"type": "string", "maxLength": 64})],
        extra={"304": {"description": "not modified"}})},
}

_V2_INFER = "Open Inference Protocol (KServe V2) inference: one input per field; 400 names the input"
_V2_PATHS: dict[str, dict[str, Any]] = {
    "/v2": {"get": _op("Open Inference Protocol server metadata", PUBLIC, out=_js(v2.SERVER_METADATA))},
    "/v2/health/live": {"get": _op("Open Inference Protocol liveness", PUBLIC, out=_js(_obj(["live"], live={"type": "boolean"})))},
    "/v2/health/ready": {"get": _op("Open Inference Protocol readiness (the /readyz checks; 503 when one fails)", PUBLIC,
                                    out=_js(v2.READY))},
    "/v2/models/{name}": {"get": _op("Open Inference Protocol model metadata (newest version)", ADMIN, out=_js(v2.MODEL_METADATA))},
    "/v2/models/{name}/versions/{version}": {"get": _op("Open Inference Protocol model metadata", ADMIN, out=_js(v2.MODEL_METADATA))},
    "/v2/models/{name}/ready": {"get": _op("Open Inference Protocol model readiness (newest version)", ADMIN, out=_js(v2.READY))},
    "/v2/models/{name}/versions/{version}/ready": {"get": _op("Open Inference Protocol model readiness", ADMIN, out=_js(v2.READY))},
    "/v2/models/{name}/infer": {"post": _op(_V2_INFER + " (newest version)", ADMIN, out=_js(v2.INFER_RESPONSE), body=v2.INFER_REQUEST)},
    "/v2/models/{name}/versions/{version}/infer": {"post": _op(_V2_INFER, ADMIN, out=_js(v2.INFER_RESPONSE), body=v2.INFER_REQUEST)},
}

PATHS: dict[str, dict[str, Any]] = {
    "/healthz": {"get": _op("liveness", PUBLIC, out=_js(_obj(["ok"], ok={"type": "boolean"})))},
    "/readyz": {"get": _op("readiness: database, broker, ingest, monitor and reconciler", PUBLIC, out=_js(_READY),
                           extra={"503": {"description": "not ready; ``failing`` names the failing checks",
                                          "content": _json(_obj(["ready", "failing", "checks"], ready={"const": False},
                                                                failing={"type": "array", "items": S}, checks=_CHECKS))}})},
    "/api/v1/openapi.json": {"get": _op("this document", PUBLIC, out=_js(_obj(["openapi", "paths"], openapi=S, paths=OBJ)))},
    "/api/v1/counters": {"get": _op("ingest and rejection counters", ADMIN, out=_js({"type": "object", "additionalProperties": INT}))},
    "/api/v1/models": {
        "get": _op("list models and versions", ADMIN, out=_list("models", _obj(["name", "latest", "versions"], name=S, latest=INT,
                                                                                versions={"type": "array", "items": _ref("Model")}))),
        "post": _op("upload a signed bundle (.tar body)", ADMIN, "201", _js(_ref("Model")),
                    body={"type": "string", "format": "binary"}, ctype="application/x-tar")},
    "/api/v1/models/{name}": {"get": _op("newest version with manifest", ADMIN, out=_js(_ref("Model")))},
    "/api/v1/models/{name}/versions/{version}": {"get": _op("one version with manifest", ADMIN, out=_js(_ref("Model")))},
    "/api/v1/models/{name}/predict": {"post": _op(
        "score one record or a list; 422 names the bad field; 500 when the model's artifact fails on valid records, 503 when "
        "its scorer does not answer within 30 s", ADMIN,
        out=_js({"oneOf": [_ref("Prediction"), {"type": "array", "items": _ref("Prediction")}]}),
        body=v.PREDICT_REQUEST, query=[Q_VERSION])},
    "/api/v1/models/{name}/cdsw": {"post": _op(
        "score one record in the CDSW model API shape: {\"feature\": \"<comma-separated values>\"} or "
        "{\"accessKey\": ..., \"request\": {...}} (answered as {\"success\": true, \"response\": ...}); 400 names the field",
        ADMIN, out=_js(cdsw.RESPONSE), body=cdsw.REQUEST, query=[Q_VERSION])},
    "/api/v1/keys": {"post": _op("trust a publisher's Ed25519 public key (PEM body)", ADMIN, "201", _js(_obj(["key_id"], key_id=S)),
                                 body={"type": "string"}, ctype="application/x-pem-file")},
    "/api/v1/artifacts/{sha256}": {"get": _op(
        "bundle archive by sha256; ETag, Range, If-Range", DEVICE, out=_TAR,
        extra={"206": {"description": "the requested range", "content": _TAR}, "304": {"description": "not modified"}})},
    "/api/v1/enrollment-tokens": {"post": _op("create a one-time enrollment token", ADMIN, "201", _js(_obj(["token"], token=S)),
                                              body=v.ENROLLMENT_TOKEN_REQUEST, body_required=False)},
    "/api/v1/devices/enroll": {"post": _op(
        "exchange an enrollment token for a device credential", PUBLIC, "201",
        _js(_obj(["device_id", "token", "server", "assignment_keys", "publisher_keys"], device_id=S, token=S, server=S,
                 mqtt=_null(S), assignment_keys={"type": "array", "items": S}, publisher_keys={"type": "array", "items": S})),
        body=_ENROLL_BODY)},
    "/api/v1/devices": {"get": _op("list devices", ADMIN, out=_list("devices", _ref("Device")))},
    "/api/v1/devices/{device_id}": {"get": _op("one device with its assignment", ADMIN, out=_js(_ref("Device")))},
    "/api/v1/devices/{device_id}/assignment": {"get": _op("signed assignment; ETag / If-None-Match", DEVICE, out=_js(_ref("Assignment")),
                                                          extra={"304": {"description": "not modified"}})},
    "/api/v1/devices/{device_id}/status": {"post": _op("report status", DEVICE, "204", body=v.STATUS)},
    "/api/v1/devices/{device_id}/telemetry": {"post": _op(
        "telemetry batch, idempotent by message id", DEVICE, out=_js(_obj(["accepted", "duplicates"], accepted=INT, duplicates=INT)),
        body=v.TELEMETRY_BATCH)},
    "/api/v1/rollouts": {"get": _op("list rollouts", ADMIN, out=_list("rollouts", _ref("Rollout"))),
                         "post": _op("start a staged rollout", ADMIN, "201", _ROLL, body=v.ROLLOUT_REQUEST)},
    "/api/v1/rollouts/{rollout_id}": {"get": _op("rollout status and progress", ADMIN, out=_ROLL)},
    "/api/v1/rollouts/{rollout_id}/{action}": {"post": _op("pause, resume, abort or rollback", ADMIN, out=_ROLL)},
    "/api/v1/models/{name}/policy": {
        "get": _op("monitoring policy (defaults when none is stored)", ADMIN, out=_js(_obj(["model", "stored", "policy"],
                                                                                        model=S, stored={"type": "boolean"}, policy=OBJ))),
        "put": _op("update the monitoring policy (partial object); 400 names the field", ADMIN,
                   out=_js(_obj(["model", "stored", "policy"], model=S, stored={"type": "boolean"}, policy=OBJ)), body=v.POLICY_REQUEST)},
    "/api/v1/models/{name}/drift": {"get": _op("drift per window and cohort; ?version=&start=&end=&window_seconds=", ADMIN, out=_js(_ref("Report")),
                                               query=[Q_VERSION, *Q_WINDOW, Q_WIDTH])},
    "/api/v1/models/{name}/performance": {"get": _op("realized and CBPE-estimated AUROC/AP per window and cohort; ?version=&start=&end=&window_seconds=",
                                                     ADMIN, out=_js(_ref("Report")), query=[Q_VERSION, *Q_WINDOW, Q_WIDTH])},
    "/api/v1/models/{name}/fairness": {"get": _op(
        "per sensitive field and window: each group's selection rate, TPR/FPR, calibration-in-the-large, AUROC and its disparities "
        "against the reference group with bootstrap intervals and verdicts; ?version=&start=&end=&window_seconds=",
        ADMIN, out=_js(OBJ), query=[Q_VERSION, *Q_WINDOW, Q_WIDTH])},
    "/api/v1/alerts": {"get": _op("alerts, newest first; ?model=&state=firing|cleared&limit=", ADMIN, out=_list("alerts", OBJ),
                                  query=[("model", {"type": "string", "maxLength": v.MAX_NAME_CHARS}),
                                         ("state", {"type": "string", "enum": ["cleared", "firing"]}),
                                         ("limit", {"type": "integer", "minimum": 1, "maximum": 5000})])},
    "/api/v1/monitor/run": {"post": _op("run a monitor pass now; returns its fired/cleared events", ADMIN, out=_list("events", OBJ),
                                        body=v.MONITOR_RUN_REQUEST, body_required=False)},
    "/metrics": {"get": _op("Prometheus text exposition (admin token)", ADMIN, out={"text/plain": {"schema": S}})},
    "/api/v1/models/{name}/labeled": {"get": _op(
        "labeled rows (features, label, score, model_version, device_id, ts) for retraining; ?start=&end=&version=&limit=", ADMIN,
        out=_js(OBJ), query=[*Q_WINDOW, Q_VERSION, ("limit", {"type": "integer", "minimum": 1, "maximum": v.MAX_DB_INT})])},
    "/api/v1/models/{name}/versions/{version}/approve": {"post": _op(
        "approve a challenger registered with approval_required: starts its rollout", ADMIN, "201", _ROLL,
        body=v.APPROVE_REQUEST, body_required=False)},
    **_C2_PATHS,
    **_V2_PATHS,
    "/api/v1/scores/{name}/{entity_id}": {"get": _op(
        "the latest batch score of an entity (edgefleet batch-score's latest table; stale by age_seconds, REST predict is real time)",
        SCORES_KEY, out=_js(scores.SCORE))},
    "/api/v1/api-keys": {"post": _op("mint a read-only API key (kind scores:read); the key is shown once", ADMIN, "201",
                                     _js(_obj(["key", "key_id", "kind", "name"], key=S, key_id=S, kind=S, name=S)), body=scores.API_KEY_REQUEST),
                         "get": _op("the API keys (never their secrets)", ADMIN, out=_js(_obj(["keys"], keys=ARR)))},
    "/api/v1/api-keys/{key_id}": {"delete": _op("revoke an API key", ADMIN, out=_js(_obj(["key_id", "revoked"], key_id=S,
                                                                                          revoked={"type": "boolean"})))},
    "/api/v1/models/{name}/retrains": {"get": _op("retrain jobs the monitor started, skipped or reaped", ADMIN,
                                                  out=_js(_obj(["model", "jobs"], model=S, jobs=ARR)))},
}


def _with_path_params(paths: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out = {}
    for path, ops in paths.items():
        names = re.findall(r"{([a-z_0-9]+)}", path)
        params = [{"name": n, "in": "path", "required": True, "schema": PATH_PARAMS[n]} for n in names]
        # on each operation, not the path item: a path item's keys are then exactly its methods
        out[path] = {m: {**op, "parameters": params + op.get("parameters", [])} if params else op for m, op in ops.items()}
    return out


SPEC: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "edgefleet fleet server", "version": "1"},
    "components": {
        "securitySchemes": {"admin": {"type": "http", "scheme": "bearer"}, "device": {"type": "http", "scheme": "bearer"},
                            "scores_key": {"type": "http", "scheme": "bearer", "description": "a scores:read API key"},
                            "basic": {"type": "http", "scheme": "basic"}},
        "schemas": SCHEMAS,
        "responses": {"Error": {"description": "error: '<field>: <reason>'", "content": _json(_ref("Error"))}},
    },
    "paths": _with_path_params(PATHS),
}
