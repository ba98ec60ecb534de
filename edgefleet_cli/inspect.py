"""A readable (or JSON) summary of a bundle: artifacts, parity, schema, reference metrics."""

from __future__ import annotations

from typing import Any

from edgefleet.bundle_format import Bundle, sha256_hex, validate_manifest


def summary(bundle: Bundle) -> dict[str, Any]:
    """The manifest must match its schema (else a one-line BundleError); the signature is not checked."""
    m = validate_manifest(bundle.manifest, bundle.source)
    arts = []
    for a in m.get("artifacts", []):
        data = bundle.files.get(a.get("path", ""))
        ok = data is not None and len(data) == a.get("size") and sha256_hex(data) == a.get("sha256")
        arts.append({**a, "integrity": "ok" if ok else "MISMATCH"})
    return {
        "bundle": bundle.source,
        "name": m.get("name"), "version": m.get("version"), "created_at": m.get("created_at"),
        "key_id": m.get("key_id"), "task": m.get("task"), "source": m.get("source"),
        "output": m.get("output"), "artifacts": arts, "parity": m.get("parity", []),
        "input_schema": m.get("input_schema", {}), "metrics": m.get("reference", {}).get("metrics", {}),
        "canary_rows": len(m.get("canary", {}).get("rows", [])),
        "signature": "present, not checked (run `edgefleet verify BUNDLE --pubkey KEY`)",
    }


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1e-3 and v != 0 else f"{v:.4f}".rstrip("0").rstrip(".")
    return str(v)


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]

    def line(r: list[str]) -> str:
        return "  ".join(str(x).ljust(w) for x, w in zip(r, widths)).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def render(s: dict[str, Any]) -> str:
    src = s.get("source") or {}
    out = [
        f"{s['name']} v{s['version']}  ({s['task']}, created {s['created_at']}, key {s['key_id']})",
        f"bundle: {s['bundle']}",
        f"source: {src.get('framework')} {src.get('framework_version')}  "
        f"{' -> '.join(src.get('estimator_chain', []))}",
        f"sample: {src.get('sample_rows')} rows, fingerprint {str(src.get('sample_fingerprint'))[:23]}...",
        f"output: classes {s['output'].get('classes')}, positive {s['output'].get('positive_class')!r}, threshold {s['output'].get('threshold')}",
        "",
        "Artifacts",
        _table(
            [[a["format"], a["path"], f"{a['size'] / 1024:.1f} KiB", f"{a['runtime']['name']}>={a['runtime']['min_version']}", a["input_kind"], a["integrity"]] for a in s["artifacts"]],
            ["format", "path", "size", "runtime", "input", "sha256"],
        ),
        "",
        "Parity (artifact scored by its real runtime vs the source model)",
        _table(
            [[p["format"], f"{p['runtime']} {p['runtime_version']}", str(p["rows"]), _fmt(p.get("max_abs_diff")), _fmt(p.get("label_agreement")), str(p.get("tie_rows", 0)), _fmt(p.get("tolerance")), "PASS" if p["passed"] else "FAIL"] for p in s["parity"]],
            ["format", "runtime", "rows", "max|dp|", "labels", "ties", "tol", "result"],
        ),
        "",
        f"Input schema ({len(s['input_schema'].get('fields', []))} fields, encoding {s['input_schema'].get('encoding')})",
    ]
    rows = []
    for f in s["input_schema"].get("fields", []):
        if f["type"] == "categorical":
            cats = f.get("categories", [])
            detail = ", ".join(map(str, cats[:4])) + (f", ... ({len(cats)})" if len(cats) > 4 else "")
            extra = f"unseen={f.get('unseen')}"
        else:
            detail = f"[{_fmt(f.get('min'))}, {_fmt(f.get('max'))}]"
            extra = ""
        rows.append([f["name"], f["type"], detail, f"missing={f.get('missing')}", extra])
    out.append(_table(rows, ["field", "type", "categories / range", "missing", "unseen"]))
    m = s.get("metrics") or {}
    out += ["", "Reference metrics: " + ", ".join(f"{k}={_fmt(v)}" for k, v in m.items()), f"Canary rows: {s['canary_rows']}", f"Signature: {s['signature']}"]
    return "\n".join(out)
