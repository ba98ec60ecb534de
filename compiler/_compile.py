"""``compile()``: lower a trained model, emit every requested target, gate on parity, sign.

Workflow: validate the sample -> pick a frontend and lower to ``ModelIR`` -> encode the sample
exactly as devices will -> reference probabilities from the source model -> per target:
check the toolchain, build, score with the real runtime, compare -> reference statistics and
canary rows -> manifest -> sign -> write. A parity failure stops the compile (nothing is
written) unless ``allow_parity_failure``; then the failure is recorded in the manifest.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import platform
import re
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

import edgefleet
from compiler import parity, reference
from compiler.bundle import artifact_entry, bundle_files, write_bundle
from compiler.errors import CompileError, ParityError
from compiler.frontends._sample import not_a_number
from compiler.ir import ModelIR
from compiler.output import number, parity_line
from compiler.progress import Progress
from compiler.registry import Registry
from compiler.targets import Artifact, Target
from edgefleet import keys
from edgefleet.bundle_format import FORMAT_NAME, FORMAT_VERSION, MANIFEST, SIGNATURE, Bundle, verify
from edgefleet.encoding import encode_columns
from edgefleet.errors import InputError
from edgefleet.manifest import VerifiedManifest

DEFAULT_TOLERANCE = 1e-5
# A quantized artifact's own parity tolerance (max |dp| against the source model). Measured on
# the churn models (1,200 held-out rows): float16 3e-4 (LR) to 1.6e-3 (MLP); int8 3.6e-2 (MLP).
QUANTIZED_TOLERANCE = {"float16": 1e-2, "int8": 5e-2}
LIBRARIES = (
    "scikit-learn", "numpy", "pandas", "skl2onnx", "onnx", "onnxruntime", "sklearn2pmml", "pypmml",
    "tensorflow-cpu", "keras", "tf2onnx", "ai-edge-litert", "coremltools", "pyspark", "pyspark2pmml",
)


def default_frontends() -> Registry[Any]:
    from compiler.frontends.keras import KerasFrontend
    from compiler.frontends.sklearn import SklearnFrontend
    from compiler.frontends.spark import SparkFrontend

    reg: Registry[Any] = Registry("frontend", required=("accepts", "lower"))
    reg.register("keras", KerasFrontend())
    reg.register("sklearn", SklearnFrontend())
    reg.register("spark", SparkFrontend())  # a saved pyspark.ml PipelineModel; pyspark is imported only for one
    return reg


def default_targets() -> Registry[Target]:
    from compiler.targets.coreml import CoremlTarget
    from compiler.targets.onnx import OnnxTarget
    from compiler.targets.pickle import PickleTarget
    from compiler.targets.pmml import PmmlTarget
    from compiler.targets.spark import SparkTarget
    from compiler.targets.tfjs import TfjsTarget
    from compiler.targets.tflite import TfliteTarget

    reg: Registry[Target] = Registry("target", required=("check_available", "build", "score", "unsupported_reason"))
    reg.register("coreml", CoremlTarget())
    reg.register("onnx", OnnxTarget())  # dispatches on the IR node: skl2onnx for sklearn, tf2onnx for Keras
    reg.register("pickle", PickleTarget())  # the fitted sklearn pipeline itself (joblib), for Python servers and Spark jobs
    reg.register("pmml", PmmlTarget())
    reg.register("spark", SparkTarget())  # the saved Spark PipelineModel folder, packed (MLWritable)
    reg.register("tfjs", TfjsTarget())
    reg.register("tflite", TfliteTarget())
    return reg


@dataclass
class CompileResult:
    manifest: VerifiedManifest
    files: dict[str, bytes] = field(repr=False)
    bundle_dir: Path | None = None
    archive: Path | None = None

    @property
    def parity_passed(self) -> bool:
        return all(p["passed"] for p in self.manifest["parity"])


def field_dicts(ir: ModelIR) -> list[dict[str, Any]]:
    out = []
    for f in ir.fields:
        d: dict[str, Any] = {"name": f.name, "type": f.type, "missing": f.missing}
        if f.type == "categorical":
            d.update(categories=list(f.categories), unseen=f.unseen)
            if f.fill is not None:
                d["fill"] = reference.json_value(f.fill)
        else:
            d.update(min=f.min, max=f.max)
        out.append(d)
    return out


def _valid_rows(fields: list[dict[str, Any]], frame: Any) -> np.ndarray:
    """Rows the input schema accepts; the rest are left out of parity and statistics."""
    ok = np.ones(len(frame), dtype=bool)
    for f in fields:
        col = frame[f["name"]]
        if f["missing"] == "reject":
            ok &= ~col.isna().to_numpy()
        if f["type"] == "categorical" and f.get("unseen") == "reject":
            ok &= col.isna().to_numpy() | col.isin([c for c in f["categories"] if c is not None]).to_numpy()
        elif f["type"] != "categorical":
            vals = col.to_numpy(dtype=np.float64, na_value=np.nan)
            ok &= ~np.isinf(vals)
    return ok


def _fingerprint(frame: Any, names: Sequence[str]) -> str:
    import pandas as pd

    hashed = pd.util.hash_pandas_object(frame[list(names)], index=False).to_numpy()
    return "sha256:" + hashlib.sha256(hashed.tobytes()).hexdigest()


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "edgefleet": edgefleet.__version__}
    for lib in LIBRARIES:
        try:
            out[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            pass
    return out


def _source_proba(model: Any, frame: Any) -> np.ndarray:
    names = getattr(model, "feature_names_in_", None)
    X = frame[list(names)] if names is not None else frame.to_numpy()
    return np.asarray(model.predict_proba(X), dtype=np.float64)


def _quantized(target: Target, ir: ModelIR, meta: dict[str, Any], mode: str, tol: float, features: np.ndarray,
               frame: Any, ref_proba: np.ndarray, progress: Progress) -> tuple[Artifact, dict[str, Any]]:
    """Build the quantized artifact and the unquantized one it is measured against; keep the former."""
    name = target.name
    with progress.step(f"{name}: build ({mode} and unquantized)"):
        art = target.build(ir, {**meta, "quantize": mode})
        base = target.build(ir, meta)
    with progress.step(f"{name}: parity on {len(frame)} rows with {target.runtime} ({mode} and unquantized)"):
        cand = target.score(art, ir, features, frame)
        base_proba = target.score(base, ir, features, frame)
        rep = parity.compare(ref_proba, cand, tolerance=tol, threshold=ir.threshold, label_margin=tol)
    rep["quantization"] = parity.quantization_delta(mode, ref_proba, cand, base_proba, size=len(art.data),
                                                    unquantized_size=len(base.data), threshold=ir.threshold)
    art.quantization = {"mode": mode, "tolerance": tol, "unquantized_size": len(base.data)}
    return art, rep


def compile(  # noqa: A001 - the public verb is compile
    model: Any,
    sample: Any,
    *,
    targets: Iterable[str] = ("onnx",),
    name: str = "model",
    version: int = 1,
    private_key: Any,
    label: str | None = None,
    out_dir: str | Path | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    allow_parity_failure: bool = False,
    parity_rows: int = 5000,
    created_at: str | None = None,
    progress: Progress | None = None,
    frontends: Registry[Any] | None = None,
    target_registry: Registry[Target] | None = None,
    quantize: str | None = None,
    quantized_tolerance: float | None = None,
) -> CompileResult:
    """Compile ``model`` into a signed bundle; see the module docstring for the workflow.

    ``quantize`` ("float16" or "int8") applies to the targets that offer it (TFLite): their
    artifact is quantized, gated at ``quantized_tolerance`` (default ``QUANTIZED_TOLERANCE``)
    and its parity record gains ``quantization``, the deltas against the unquantized artifact.
    """
    import pandas as pd

    targets = [t.strip() for t in targets if t.strip()]
    frontends = frontends or default_frontends()
    target_registry = target_registry or default_targets()
    if not isinstance(sample, pd.DataFrame) or sample.empty:
        raise CompileError("the sample must be a non-empty DataFrame with the model's input columns")
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version < 2**31:
        raise CompileError(f"version must be an integer in [1, 2**31), got {version!r}")
    if not isinstance(name, str) or not re.fullmatch(r"[a-z0-9][a-z0-9._-]{0,63}", name, re.ASCII):
        # the manifest schema's rule, checked before parity runs rather than at signing
        raise CompileError(f"name must be 1-64 characters of a-z, 0-9, '.', '_', '-' starting with a letter or digit, got {name!r}")
    if not targets:
        raise CompileError("no targets requested")
    for t in targets:
        if t not in target_registry:
            raise CompileError(f"unknown target {t!r}; known targets: {', '.join(target_registry.names())}")
    if label is not None and label not in sample.columns:
        raise CompileError(f"label column {label!r} is not in the sample; columns are: {', '.join(map(str, sample.columns))}")
    quantized = [t for t in targets if quantize and quantize in getattr(target_registry.get(t), "quantizations", ())]
    if quantize:
        if quantize not in QUANTIZED_TOLERANCE:
            raise CompileError(f"unknown quantization {quantize!r}; use {' or '.join(QUANTIZED_TOLERANCE)}")
        if not quantized:
            offering = [n for n in target_registry.names() if quantize in getattr(target_registry.get(n), "quantizations", ())]
            raise CompileError(f"--quantize {quantize} applies to {', '.join(offering) or 'no target'}; requested targets: {', '.join(targets)}")
    q_tol = quantized_tolerance if quantized_tolerance is not None else QUANTIZED_TOLERANCE.get(quantize or "", tolerance)
    progress = progress or Progress(quiet=True)
    progress.total = 3 + 2 * len(targets)

    for t in targets:  # fail fast, before any slow step, on a missing toolchain
        target_registry.get(t).check_available()

    with progress.step("lowering model"):
        frontend = next((frontends.get(n) for n in frontends.names() if frontends.get(n).accepts(model)), None)
        if frontend is None:
            raise CompileError(f"no frontend accepts a {type(model).__module__}.{type(model).__name__}; known: {', '.join(frontends.names())}")
        ir: ModelIR = frontend.lower(model, sample)
        for t in targets:
            reason = target_registry.get(t).unsupported_reason(ir)
            if reason:
                raise CompileError(f"target {t} cannot take model {name!r}: {reason}")
            node_check = getattr(target_registry.get(t), "check_available_for", None)
            if callable(node_check):  # a converter only this node type needs (tf2onnx for Keras)
                node_check(ir)
            if t in quantized:
                reason = target_registry.get(t).quantize_unsupported_reason(ir, quantize)  # type: ignore[attr-defined]
                if reason:
                    raise CompileError(f"target {t} cannot quantize model {name!r} to {quantize}: {reason}")
        fields = field_dicts(ir)
        for f in fields:  # a numeric field pandas read as text: a data error in a named row, before anything converts it
            problem = None if f["type"] == "categorical" else not_a_number(sample, f["name"])
            if problem:
                raise CompileError(problem)
        progress.note(f"{ir.estimator.family}, {len(ir.fields)} input fields -> {len(ir.columns)} features")

    with progress.step("encoding sample and scoring the source model"):
        valid = _valid_rows(fields, sample)
        frame = sample.loc[valid].reset_index(drop=True)
        if frame.empty:
            raise CompileError("no sample row satisfies the input schema (every row has a missing or unknown value the model cannot take)")
        if len(frame) > parity_rows:
            frame = frame.sample(n=parity_rows, random_state=0).reset_index(drop=True)
        try:
            features = encode_columns(fields, frame)
        except InputError as exc:
            raise CompileError(f"sample: {exc}") from exc
        try:
            own = getattr(frontend, "source_proba", None)  # a frontend whose model is not sklearn-shaped (Spark: transform)
            ref_proba = own(model, frame, ir) if callable(own) else _source_proba(model, frame)
        except Exception as exc:  # the user's model raising is the user's error, reported plainly
            raise CompileError(f"the source model failed to score the sample: {type(exc).__name__}: {exc}") from exc
        y = None
        if label is not None:
            y_raw = frame[label].to_numpy()
            if pd.isna(y_raw).any():
                raise CompileError(f"label column {label!r} has missing values")
            known = set(reference.json_value(c) for c in ir.estimator.classes)
            unknown = {reference.json_value(v) for v in y_raw} - known
            if unknown:
                raise CompileError(f"label column {label!r} holds values the model does not know: {sorted(map(str, unknown))[:5]} (classes: {sorted(map(str, known))})")
            if ir.positive_class is not None:
                y = np.array([reference.json_value(v) == ir.positive_class for v in y_raw], dtype=np.int64)
        dropped = int((~valid).sum())
        if dropped:
            progress.note(f"{dropped} sample rows left out: missing or unknown values the schema rejects")

    created_at = created_at or dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    meta = {"name": name, "version": version, "created_at": created_at, "edgefleet_version": edgefleet.__version__}
    artifacts: list[Artifact] = []
    reports: list[dict[str, Any]] = []
    for t in targets:
        target = target_registry.get(t)
        if t in quantized:
            art, rep = _quantized(target, ir, meta, str(quantize), q_tol, features, frame, ref_proba, progress)
        else:
            with progress.step(f"{t}: build"):
                art = target.build(ir, meta)
            with progress.step(f"{t}: parity on {len(frame)} rows with {target.runtime}"):
                cand = target.score(art, ir, features, frame)
                rep = parity.compare(ref_proba, cand, tolerance=tolerance, threshold=ir.threshold)
        rep = {"format": t, "runtime": target.runtime, "runtime_version": target.runtime_version(), **rep}
        progress.note(f"{t}: {parity_line(rep)}, {'PASSED' if rep['passed'] else 'FAILED'}")
        artifacts.append(art)
        reports.append(rep)

    failed = [r for r in reports if not r["passed"]]
    if failed and not allow_parity_failure:
        lines = "; ".join(
            f"target {r['format']} ({r['runtime']} {r['runtime_version']}): max |dp| {number(r['max_abs_diff'])} > tolerance {r['tolerance']:g}"
            f", {r.get('label_mismatches')} label mismatches{(' - ' + r['error']) if r.get('error') else ''}"
            for r in failed
        )
        raise ParityError(f"parity failed for model {name!r} ({ir.estimator.family}): {lines}. Nothing was written; pass --allow-parity-failure to write it anyway")

    with progress.step("reference statistics, canary rows, signing"):
        binary = ref_proba.shape[1] == 2
        scores = ref_proba[:, 1] if binary else ref_proba.max(axis=1)
        manifest = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "name": name,
            "version": version,
            "created_at": created_at,
            "key_id": keys.key_id(private_key.public_key()),
            "task": "binary_classification" if binary else "multiclass_classification",
            "source": {
                "framework": ir.framework,
                "framework_version": ir.framework_version,
                "estimator": ir.estimator.family,
                "estimator_chain": list(ir.estimator_chain),
                "library_versions": _versions(),
                "sample_fingerprint": _fingerprint(sample, [f.name for f in ir.fields] + ([label] if label else [])),
                "sample_rows": int(len(sample)),
                "label": label,
            },
            "input_schema": {"encoding": "edgefleet.v1", "fields": fields},
            "output": {
                "classes": [reference.json_value(c) for c in ir.estimator.classes],
                "positive_class": ir.positive_class,
                "threshold": ir.threshold,
            },
            "artifacts": [artifact_entry(a) for a in artifacts],
            "parity": reports,
            "reference": {
                "rows": int(len(frame)),
                "fields": reference.field_stats(ir, features, frame),
                "score": reference.score_stats(scores),
                "metrics": reference.metrics(y, scores),
            },
            "canary": {
                "tolerance": tolerance,
                "rows": reference.canary_rows(frame, [f.name for f in ir.fields], ref_proba, ir.estimator.classes, ir.threshold),
            },
        }
        files = bundle_files(manifest, artifacts, private_key)
    # The result's manifest is what a device would trust: the signed bundle verified with the
    # signer's public key (a bug in signing or hashing fails the compile, not a device).
    verified = verify(Bundle(f"compile {name} v{version}", files[MANIFEST], base64.b64decode(files[SIGNATURE]), files), private_key.public_key())
    result = CompileResult(verified, files)
    if out_dir is not None:
        result.bundle_dir, result.archive = write_bundle(files, out_dir)
    progress.finish(f"compiled {name} v{version} to {', '.join(targets)}")
    return result
