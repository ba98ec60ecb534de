"""Validate a bundle manifest against ``schema/manifest.schema.json``, with the standard library only.

A device install carries numpy, onnxruntime, cryptography and paho, not ``jsonschema``, yet a
correctly signed but malformed manifest must still be refused before any field is used. So this
module interprets the shipped schema itself: the subset of JSON Schema 2020-12 that the schema
file uses (``type``, ``required``, ``properties``, ``additionalProperties``, ``const``, ``enum``,
``pattern``, ``minimum``/``maximum`` and their exclusive forms, ``minLength``/``maxLength``,
``minItems``/``maxItems``, ``items``, ``$ref`` to ``#/$defs``, ``oneOf``, ``if``/``then``/``else``).
A keyword outside that subset is a bug in the schema and fails loudly at load time, rather
than being silently ignored.

It is deliberately stricter than the standard in one way: ``integer`` means a JSON integer
(``7.0`` and ``true`` are not integers), and ``number`` excludes booleans and non-finite values.

After the schema, ``check_manifest`` adds the rules a schema cannot say: artifact paths,
artifact formats, input field names and classes are unique; a binary model's positive class is
its second class; every canary row has one probability per class.

The first violation is reported as one line naming the field: ``artifacts[0].format: is
required``.
"""

from __future__ import annotations

import json
import math
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

from edgefleet.errors import ManifestError

__all__ = ["SCHEMA_PATH", "ManifestError", "check_manifest", "schema", "validate"]

SCHEMA_PATH = Path(__file__).resolve().parent / "schema" / "manifest.schema.json"
MAX_DEPTH = 64  # the real manifest nests 8 deep; anything deeper is refused before recursion can hurt

_KNOWN = {
    "$schema", "$id", "$defs", "title", "description", "$ref", "type", "required", "properties",
    "additionalProperties", "const", "enum", "pattern", "minimum", "maximum", "exclusiveMinimum",
    "exclusiveMaximum", "minLength", "maxLength", "minItems", "maxItems", "items", "oneOf", "if",
    "then", "else",
}


def _check_keywords(node: Any, where: str) -> None:
    if isinstance(node, dict):
        unknown = set(node) - _KNOWN
        if unknown and not where.endswith(("/properties", "/$defs")):
            raise RuntimeError(f"manifest schema {where}: unsupported keywords {sorted(unknown)}")
        for k, v in node.items():
            _check_keywords(v, f"{where}/{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            _check_keywords(v, f"{where}/{i}")


@lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    data = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    _check_keywords(data, "#")
    if not isinstance(data, dict):
        raise RuntimeError(f"{SCHEMA_PATH}: the manifest schema is not a JSON object")
    return data


def _is_type(value: Any, name: str) -> bool:
    if name == "object":
        return isinstance(value, dict)
    if name == "array":
        return isinstance(value, list)
    if name == "string":
        return isinstance(value, str)
    if name == "boolean":
        return isinstance(value, bool)
    if name == "null":
        return value is None
    if name == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if name == "number":
        return (isinstance(value, int) and not isinstance(value, bool)) or (isinstance(value, float) and math.isfinite(value))
    raise RuntimeError(f"manifest schema: unknown type {name!r}")


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number" if math.isfinite(value) else "a non-finite number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=True, default=str) if not isinstance(value, (dict, list)) else _type_name(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _same(a: Any, b: Any) -> bool:
    """Equality for const/enum, strict on type: ``true`` is not ``1`` and ``1.0`` is not ``1``."""
    return type(a) is type(b) and a == b


def _matches(pattern: str, value: str) -> bool:
    """ECMA-262 semantics as JSON Schema means them: ASCII classes, ``$`` only at the very end."""
    m = _compiled(pattern).search(value)
    return m is not None and (not pattern.endswith("$") or m.end() == len(value))


@lru_cache(maxsize=64)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.ASCII)


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


class _Validator:
    def __init__(self, root: dict[str, Any]) -> None:
        self.root = root

    def resolve(self, ref: str) -> dict[str, Any]:
        if not ref.startswith("#/$defs/"):
            raise RuntimeError(f"manifest schema: unsupported $ref {ref!r}")
        target: dict[str, Any] = self.root["$defs"][ref[len("#/$defs/"):]]
        return target

    def errors(self, value: Any, node: dict[str, Any], path: str, depth: int = 0) -> str | None:
        """The first violation as ``field: reason``, or None."""
        where = path or "manifest"
        if depth > MAX_DEPTH:
            return f"{where}: nested deeper than {MAX_DEPTH} levels"
        if "$ref" in node:
            err = self.errors(value, self.resolve(node["$ref"]), path, depth + 1)
            if err:
                return err
        if "type" in node:
            types = node["type"] if isinstance(node["type"], list) else [node["type"]]
            if not any(_is_type(value, t) for t in types):
                return f"{where}: must be {' or '.join(types)}, got {_type_name(value)}"
        if "const" in node and not _same(value, node["const"]):
            return f"{where}: must be {_show(node['const'])}, got {_show(value)}"
        if "enum" in node and not any(_same(value, e) for e in node["enum"]):
            return f"{where}: must be one of {', '.join(_show(e) for e in node['enum'])}; got {_show(value)}"
        if isinstance(value, str):
            if "minLength" in node and len(value) < node["minLength"]:
                return f"{where}: must be at least {node['minLength']} characters"
            if "maxLength" in node and len(value) > node["maxLength"]:
                return f"{where}: must be at most {node['maxLength']} characters, got {len(value)}"
            if "pattern" in node and not _matches(node["pattern"], value):
                return f"{where}: {_show(value)} does not match {node['pattern']}"
        if _is_type(value, "number"):
            if "minimum" in node and value < node["minimum"]:
                return f"{where}: must be >= {node['minimum']}, got {_show(value)}"
            if "maximum" in node and value > node["maximum"]:
                return f"{where}: must be <= {node['maximum']}, got {_show(value)}"
            if "exclusiveMinimum" in node and value <= node["exclusiveMinimum"]:
                return f"{where}: must be > {node['exclusiveMinimum']}, got {_show(value)}"
            if "exclusiveMaximum" in node and value >= node["exclusiveMaximum"]:
                return f"{where}: must be < {node['exclusiveMaximum']}, got {_show(value)}"
        if isinstance(value, list):
            if "minItems" in node and len(value) < node["minItems"]:
                return f"{where}: must have at least {node['minItems']} items, got {len(value)}"
            if "maxItems" in node and len(value) > node["maxItems"]:
                return f"{where}: must have at most {node['maxItems']} items, got {len(value)}"
            if "items" in node:
                for i, item in enumerate(value):
                    err = self.errors(item, node["items"], _join(path, i), depth + 1)
                    if err:
                        return err
        if isinstance(value, dict):
            for key in node.get("required", []):
                if key not in value:
                    return f"{_join(path, key)}: is required"
            props = node.get("properties", {})
            extra = node.get("additionalProperties", True)
            for key, item in value.items():
                if key in props:
                    err = self.errors(item, props[key], _join(path, key), depth + 1)
                elif extra is False:
                    err = f"{_join(path, str(key))}: is not a known field"
                elif isinstance(extra, dict):
                    err = self.errors(item, extra, _join(path, key), depth + 1)
                else:
                    err = None
                if err:
                    return err
        if "oneOf" in node:
            matches = [s for s in node["oneOf"] if self.errors(value, s, path, depth + 1) is None]
            if len(matches) != 1:
                first = self.errors(value, node["oneOf"][0], path, depth + 1) if not matches else None
                return f"{where}: must match exactly one of {len(node['oneOf'])} forms, matches {len(matches)}" + (f" ({first})" if first else "")
        if "if" in node:
            branch = "then" if self.errors(value, node["if"], path, depth + 1) is None else "else"
            if branch in node:
                err = self.errors(value, node[branch], path, depth + 1)
                if err:
                    return err
        return None


def validate(manifest: Any) -> None:
    """Raise ``ManifestError`` naming the first field of ``manifest`` that breaks the schema."""
    err = _Validator(schema()).errors(manifest, schema(), "")
    if err:
        field, _, reason = err.partition(": ")
        raise ManifestError(field, reason)


def check_manifest(manifest: Any) -> dict[str, Any]:
    """The schema, then the rules it cannot express; returns the manifest for chaining."""
    validate(manifest)
    seen_paths: set[str] = set()
    seen_formats: set[str] = set()
    for i, art in enumerate(manifest["artifacts"]):
        if art["path"].casefold() in seen_paths:
            raise ManifestError(f"artifacts[{i}].path", f"{art['path']!r} is listed twice")
        if art["format"] in seen_formats:
            raise ManifestError(f"artifacts[{i}].format", f"{art['format']!r} is listed twice; a bundle carries one artifact per format")
        seen_paths.add(art["path"].casefold())
        seen_formats.add(art["format"])
    names: set[str] = set()
    for i, f in enumerate(manifest["input_schema"]["fields"]):
        if f["name"] in names:
            raise ManifestError(f"input_schema.fields[{i}].name", f"{f['name']!r} is listed twice")
        names.add(f["name"])
    out = manifest["output"]
    classes = out["classes"]
    keys = [json.dumps(c, sort_keys=True) for c in classes]
    if len(set(keys)) != len(keys):
        raise ManifestError("output.classes", "a class is listed twice")
    if out["positive_class"] is not None and not any(_same(out["positive_class"], c) for c in classes):
        raise ManifestError("output.positive_class", f"{_show(out['positive_class'])} is not one of the classes")
    if len(classes) == 2 and out["positive_class"] is not None and not _same(out["positive_class"], classes[1]):
        raise ManifestError("output.positive_class", "must be the second class of a binary model (its probability is column 1)")
    for i, row in enumerate(manifest["canary"]["rows"]):
        if len(row["probabilities"]) != len(classes):
            raise ManifestError(f"canary.rows[{i}].probabilities", f"has {len(row['probabilities'])} values for {len(classes)} classes")
    checked: dict[str, Any] = manifest  # validate() proved it is an object of this shape
    return checked
