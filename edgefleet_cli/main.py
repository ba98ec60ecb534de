"""The ``edgefleet`` command line. Every verb hangs off this one entry point.

    edgefleet keys generate --out DIR
    edgefleet compile MODEL --sample DATA.csv --label COL --name N --version V \\
                      --targets onnx,pmml --key DIR/private.pem --out OUTDIR [--quantize float16|int8]
    edgefleet inspect BUNDLE [--json]
    edgefleet verify BUNDLE --pubkey FILE
    edgefleet score BUNDLE --pubkey FILE --input FILE.csv|FILE.jsonl [--backend onnx|tflite|pmml] [--output OUT]
    edgefleet device run --server URL --device-id ID --credential FILE --data-dir DIR [--mqtt URL]
    edgefleet device enroll --server URL --token T --device-id ID --out cred.json
    edgefleet server [--db URL] [--mqtt URL]
    edgefleet publish BUNDLE
    edgefleet rollout start|status|pause|resume|abort|rollback
    edgefleet devices list|show|token
    edgefleet retrain --server URL --model N --trainer mod:fn --reference-data train.csv --key private.pem

Global options (before the verb): ``--log-level LEVEL`` and ``--log-format text|json``
(:mod:`edgefleet_cli.logs`). Errors edgefleet raises on purpose are printed as one line, ``edgefleet: error: ...``, with
exit status 1 (2 for bad usage); a traceback means a bug.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any, Sequence

from edgefleet.errors import EdgefleetError
from edgefleet_cli import logs
from edgefleet_cli.args import OneLineParser, http_url, mqtt_url, number, positive_int


def _cmd_keys_generate(args: argparse.Namespace) -> int:
    from edgefleet import keys
    from edgefleet.errors import KeyFileError

    try:
        priv, pub = keys.generate_keypair(args.out, overwrite=args.force)
    except OSError as exc:  # keys.generate_keypair does not translate its folder/file errors (yet)
        raise KeyFileError(f"--out {args.out}: cannot write the key pair: {exc.strerror or exc}") from exc
    print(f"wrote {priv} (keep secret) and {pub} (key id {keys.key_id(keys.load_public_key(pub))})")
    return 0


def _load_model(path: str, feature_names: str | None = None, classes: str | None = None) -> Any:
    from compiler.errors import CompileError

    p = Path(path)
    if not p.is_file():
        raise CompileError(f"model file {path} does not exist")
    if p.suffix == ".keras":  # a .keras file knows neither its column names nor its class labels
        from compiler.frontends.keras import KerasModel

        if not feature_names:
            raise CompileError(f"{path} is a Keras model: pass --feature-names (the sample columns it takes, in order)")
        labels = [c.strip() for c in (classes or "0,1").split(",")]
        parsed: list[Any] = [int(c) for c in labels] if all(c.lstrip("-").isdigit() for c in labels) else labels
        return KerasModel.load(p, [n.strip() for n in feature_names.split(",")], parsed)
    try:
        import joblib

        return joblib.load(p)
    except Exception as exc:  # pickle can raise anything: EOFError, UnpicklingError, ModuleNotFoundError...
        raise CompileError(f"cannot load model file {path} (expected a joblib or pickle file of a fitted scikit-learn model): {type(exc).__name__}: {exc}") from exc


def _load_sample(path: str) -> Any:
    import pandas as pd

    from compiler.errors import CompileError

    try:
        if path.endswith((".jsonl", ".ndjson")):
            return pd.read_json(path, lines=True)
        if path.endswith(".parquet"):
            return pd.read_parquet(path)
        return pd.read_csv(path)
    except FileNotFoundError as exc:
        raise CompileError(f"sample file {path} does not exist") from exc
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise CompileError(f"cannot read sample {path}: {exc}") from exc


def _cmd_compile(args: argparse.Namespace) -> int:
    from compiler import compile as compile_model
    from compiler.progress import Progress
    from edgefleet import keys

    key = keys.load_private_key(args.key)
    model = _load_model(args.model, args.feature_names, args.classes)
    sample = _load_sample(args.sample)
    result = compile_model(
        model, sample,
        targets=args.targets.split(","), name=args.name, version=args.version, private_key=key,
        label=args.label, out_dir=args.out, tolerance=args.tolerance,
        allow_parity_failure=args.allow_parity_failure, parity_rows=args.parity_rows,
        progress=Progress(quiet=args.quiet), quantize=args.quantize, quantized_tolerance=args.quantized_tolerance,
    )
    for p in result.manifest["parity"]:
        status = "passed" if p["passed"] else "FAILED (recorded in the manifest)"
        print(f"{p['format']}: {p['runtime']} {p['runtime_version']}, max |dp| {p['max_abs_diff']}, parity {status}")
        q = p.get("quantization")
        if q:
            v = q["vs_unquantized"]
            print(f"  {q['mode']}: {q['size']} B (unquantized {q['unquantized_size']} B), vs unquantized max |dp| {v['max_abs_diff']:.3g}, "
                  f"label agreement {v['label_agreement']:.4f}, label agreement delta vs source {q['label_agreement_delta']:+.4f}")
    print(f"bundle: {result.bundle_dir}\narchive: {result.archive}")
    return 0 if result.parity_passed else 3


def _cmd_inspect(args: argparse.Namespace) -> int:
    from edgefleet.bundle_format import open_bundle
    from edgefleet_cli.inspect import render, summary

    s = summary(open_bundle(args.bundle))
    print(json.dumps(s, indent=2, sort_keys=True) if args.json else render(s))
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from edgefleet import keys
    from edgefleet.bundle_format import open_bundle, verify

    manifest = verify(open_bundle(args.bundle), keys.load_public_key(args.pubkey))
    arts = ", ".join(f"{a['format']} ({a['size']} B)" for a in manifest["artifacts"])
    print(f"OK: {manifest['name']} v{manifest['version']} signed by key {manifest['key_id']}; artifacts verified: {arts}")
    return 0


def _read_records(path: str, fields: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """CSV (typed by the schema: numbers parsed, empty cells missing) or JSON Lines records."""
    from edgefleet.errors import InputError

    try:
        return _parse_records(path, fields)
    except UnicodeDecodeError as exc:
        raise InputError("--input", f"{path} is not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    except csv.Error as exc:
        raise InputError("--input", f"{path} is not readable CSV: {exc}") from None


def _parse_records(path: str, fields: list[dict[str, Any]]) -> list[dict[str, Any]]:
    from edgefleet.errors import InputError

    names = {f["name"]: f for f in fields}
    try:
        fh = open(path, newline="", encoding="utf-8")
    except OSError as exc:
        raise InputError("--input", f"cannot read {path}: {exc.strerror or exc}") from exc
    with fh:
        if path.endswith((".jsonl", ".ndjson", ".json")):
            out = []
            for i, line in enumerate(fh):
                if line.strip():
                    try:
                        out.append(json.loads(line))
                    except json.JSONDecodeError as exc:
                        raise InputError("--input", f"line {i + 1} is not JSON: {exc}") from exc
                    except RecursionError:
                        raise InputError("--input", f"line {i + 1} is nested too deeply to be a record") from None
            return out
        reader = csv.DictReader(fh)
        missing = [n for n in names if n not in (reader.fieldnames or [])]
        if missing:
            raise InputError(missing[0], f"the CSV has no column {missing[0]!r}")
        records = []
        for i, row in enumerate(reader):
            rec: dict[str, Any] = {}
            for name, f in names.items():
                cell = row[name]
                if cell is None or cell == "":
                    rec[name] = None
                elif f["type"] == "categorical":
                    cats = f.get("categories", [])
                    rec[name] = cell if any(isinstance(c, str) for c in cats) or not cats else _number(cell, name, i)
                elif f["type"] == "boolean":
                    rec[name] = cell.strip().lower() in ("1", "true", "yes")
                else:
                    rec[name] = _number(cell, name, i)
            records.append(rec)
        return records


def _number(cell: str, name: str, row: int) -> float | int:
    from edgefleet.errors import InputError

    try:
        return int(cell) if cell.lstrip("-").isdigit() else float(cell)
    except ValueError:
        raise InputError(name, f"row {row}: expected a number, got {cell!r}") from None


def _cmd_score(args: argparse.Namespace) -> int:
    from edgefleet.errors import InputError
    from runtimes.python import Scorer

    scorer = Scorer.from_bundle(args.bundle, args.pubkey, backend=args.backend)
    records = _read_records(args.input, scorer.fields)
    preds = scorer.score_many(records)
    try:
        out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout
    except OSError as exc:
        raise InputError("--output", f"cannot write {args.output}: {exc.strerror or exc}") from None
    try:
        for i, p in enumerate(preds):
            out.write(json.dumps({"row": i, "probability": p.probability, "label": p.label, "model_version": p.version, "backend": scorer.backend_name}) + "\n")
    finally:
        if args.output:
            out.close()
    if args.output:
        print(f"scored {len(preds)} records with {scorer.name} v{scorer.version} ({scorer.backend_name}) -> {args.output}", file=sys.stderr)
    return 0


def _cmd_device_run(args: argparse.Namespace) -> int:
    from runtimes.python.agent import Agent, AgentConfig

    cfg = AgentConfig.from_credential(
        args.credential, data_dir=args.data_dir, server=args.server, device_id=args.device_id, mqtt=args.mqtt,
        poll_seconds=args.poll_seconds, sample_rate=args.sample_rate, include_features=not args.no_features,
        input_dir=Path(args.input_dir) if args.input_dir else None,
    )
    agent = Agent(cfg)
    model = f"{agent.scorer.name} v{agent.scorer.version}" if agent.scorer else "no model yet"
    print(f"edgefleet device {cfg.device_id}: {model}; server {cfg.server}; mqtt {cfg.mqtt or 'off (HTTP polling)'}", file=sys.stderr, flush=True)
    return agent.run()


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="edgefleet", description="Compile, sign, verify and ship ML models to offline edge devices.")
    parser.add_argument("--log-level", type=str.upper, choices=logs.LEVELS,
                        help="log threshold (default INFO for `server` and `device run`, WARNING otherwise)")
    parser.add_argument("--log-format", choices=logs.FORMATS, default="text",
                        help="text, or json: one object a line with ts, level, logger, message, exc")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    k = sub.add_parser("keys", help="manage signing keys")
    ksub = k.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    kg = ksub.add_parser("generate", help="write a new Ed25519 key pair (private.pem, public.pem)")
    kg.add_argument("--out", required=True, help="folder for the key pair")
    kg.add_argument("--force", action="store_true", help="overwrite an existing private key")
    kg.set_defaults(func=_cmd_keys_generate)

    c = sub.add_parser("compile", help="compile a trained model into a signed, parity-checked bundle")
    c.add_argument("model", help="joblib/pickle file of a fitted scikit-learn classifier or Pipeline, or a .keras file")
    c.add_argument("--feature-names", help=".keras only: comma-separated sample columns the model takes, in order")
    c.add_argument("--classes", help=".keras only: comma-separated class labels in output order (default 0,1)")
    c.add_argument("--sample", required=True, help="CSV/JSONL/Parquet of data the model was not trained on (schema, statistics, parity)")
    c.add_argument("--label", help="label column in the sample (enables AUROC / AP in the reference metrics)")
    c.add_argument("--name", required=True, help="model name, e.g. churn")
    c.add_argument("--version", required=True, type=positive_int, help="monotonically increasing integer version")
    c.add_argument("--targets", default="onnx", help="comma-separated: onnx,pmml,tflite,tfjs,coreml (default onnx)")
    c.add_argument("--key", required=True, help="Ed25519 private key (from `edgefleet keys generate`)")
    c.add_argument("--out", required=True, help="bundle folder to write; OUT.tar is written beside it")
    c.add_argument("--tolerance", type=number(0), default=1e-5, help="max |probability difference| per row (default 1e-5)")
    c.add_argument("--parity-rows", type=positive_int, default=5000, help="sample rows scored for parity (default 5000)")
    c.add_argument("--quantize", choices=["float16", "int8"], help="quantize the tflite artifact (Keras, LogisticRegression, MLPClassifier); deltas vs unquantized go in the manifest")
    c.add_argument("--quantized-tolerance", type=number(0), help="parity tolerance of a quantized artifact (default 1e-2 float16, 5e-2 int8)")
    c.add_argument("--allow-parity-failure", action="store_true", help="write the bundle even if parity fails (recorded in the manifest)")
    c.add_argument("--quiet", action="store_true", help="no progress display")
    c.set_defaults(func=_cmd_compile)

    i = sub.add_parser("inspect", help="summarize a bundle: formats, sizes, parity, schema, metrics")
    i.add_argument("bundle", help="bundle folder or .tar")
    i.add_argument("--json", action="store_true", help="machine-readable output")
    i.set_defaults(func=_cmd_inspect)

    v = sub.add_parser("verify", help="check a bundle's signature, then every artifact's size and sha256")
    v.add_argument("bundle", help="bundle folder or .tar")
    v.add_argument("--pubkey", required=True, help="trusted Ed25519 public key (PEM)")
    v.set_defaults(func=_cmd_verify)

    sc = sub.add_parser("score", help="score records offline with a verified bundle")
    sc.add_argument("bundle", help="bundle folder or .tar")
    sc.add_argument("--pubkey", required=True, help="trusted Ed25519 public key (PEM); nothing unverified is scored")
    sc.add_argument("--input", required=True, help="records: FILE.csv or FILE.jsonl")
    sc.add_argument("--backend", choices=["onnx", "tflite", "pmml"], help="force a runtime (default: the first one installed that the bundle offers)")
    sc.add_argument("--output", help="write JSON Lines here instead of stdout")
    sc.set_defaults(func=_cmd_score)

    d = sub.add_parser("device", help="run the device agent")
    dsub = d.add_subparsers(dest="device_command", required=True, metavar="ACTION")
    dr = dsub.add_parser("run", help="sync models and telemetry with the fleet server; score offline")
    dr.add_argument("--server", type=http_url, help="fleet server URL (default: from the credential file)")
    dr.add_argument("--device-id", help="this device's id (default: from the credential file)")
    dr.add_argument("--credential", required=True, help="credential JSON from enrollment (token, trusted keys)")
    dr.add_argument("--data-dir", required=True, help="where models, the outbox and state live")
    dr.add_argument("--mqtt", type=mqtt_url, help="mqtt://host:port (default: from the credential file; HTTP polling without)")
    dr.add_argument("--poll-seconds", type=number(0, 86400, lo_open=True), default=30.0, help="HTTP assignment poll period while MQTT is down")
    dr.add_argument("--sample-rate", type=number(0, 1), default=1.0, help="fraction of predictions sent as telemetry")
    dr.add_argument("--no-features", action="store_true", help="privacy switch: never send raw features")
    dr.add_argument("--input-dir", help="score *.jsonl files dropped here (MiNiFi-style); results in INPUT_DIR/scored")
    dr.set_defaults(func=_cmd_device_run)

    from edgefleet_cli import fleet as cli_fleet

    cli_fleet.add_enroll_parser(dsub)
    cli_fleet.add_parsers(sub)

    from compiler import retrain

    retrain.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logs.configure(args.log_level or logs.default_level(args.command, getattr(args, "device_command", None)), args.log_format)
    try:
        return int(args.func(args))
    except EdgefleetError as exc:
        message = " ".join(str(exc).split())  # one line, whatever the message holds
        print(f"{getattr(exc, 'prog', 'edgefleet')}: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("edgefleet: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
