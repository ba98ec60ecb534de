"""The ``edgefleet`` command line. Every verb hangs off this one entry point.

    edgefleet keys generate --out DIR
    edgefleet compile MODEL --sample DATA.csv --label COL --name N --version V \\
                      --targets onnx,pmml --key DIR/private.pem --out OUTDIR [--quantize float16|int8]
    edgefleet inspect BUNDLE [--json]
    edgefleet verify BUNDLE --pubkey FILE
    edgefleet score BUNDLE --pubkey FILE --input FILE.csv|FILE.jsonl [--backend onnx|tflite|pmml] [--output OUT]
    edgefleet agent run --server URL --device-id ID --credential FILE --data-dir DIR [--mqtt URL]
    edgefleet agent enroll --server URL --token T --device-id ID --out cred.json
    edgefleet server [--db URL] [--mqtt URL]
    edgefleet publish BUNDLE
    edgefleet rollout start|status|pause|resume|abort|rollback|approve
    edgefleet models list|show     edgefleet devices list|show|token     [--json]
    edgefleet alerts list          edgefleet policies show|set     edgefleet outcomes upload FILE.csv
    edgefleet retrain --server URL --model N --trainer mod:fn --reference-data train.csv --key private.pem

Global options (before the verb): ``--version``, ``--log-level LEVEL`` and ``--log-format text|json``
(:mod:`edgefleet_cli.logs`). Errors edgefleet raises on purpose are printed as one line, ``edgefleet: error: ...``, with
exit status 1 (2 for bad usage); a traceback means a bug. A missing optional dependency names the extra that
brings it (``install edgefleet[server]``). Every path option is made absolute against the caller's working
directory when the command line is parsed. ``edgefleet device ...`` is the old spelling of ``edgefleet agent ...``
(hidden, kept for one release). Server URL and admin token: flag > environment > config file
(:mod:`edgefleet_cli.config`) > default.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from edgefleet.errors import EdgefleetError
from edgefleet_cli import logs
from edgefleet_cli.args import OneLineParser, http_url, model_name, mqtt_url, number, path, positive_int, writable_output_path

# top-level module of a missing dependency -> the extra that installs it (pyproject.toml [project.optional-dependencies])
EXTRA_OF = {
    **dict.fromkeys(["flask", "werkzeug", "sqlalchemy", "alembic", "waitress", "amqtt", "psycopg", "aiomqtt", "prometheus_client"], "server"),
    **dict.fromkeys(["sklearn", "pandas", "joblib", "skl2onnx", "onnx", "jsonschema", "google"], "compiler"),
    **dict.fromkeys(["tensorflow", "keras", "tf2onnx", "ai_edge_litert", "coremltools"], "tf"),
    **dict.fromkeys(["sklearn2pmml", "pypmml"], "pmml"),
    **dict.fromkeys(["pyspark"], "spark"),
    **dict.fromkeys(["pyspark2pmml"], "spark-pmml"),
    **dict.fromkeys(["numpy", "onnxruntime", "cryptography", "paho"], "device"),
}


class MissingExtraError(EdgefleetError):
    """A verb's optional dependency is not installed; the message names the package and the extra."""


def missing_extra(exc: ModuleNotFoundError, command: str | None) -> MissingExtraError | None:
    top = (exc.name or "").split(".")[0]
    extra = EXTRA_OF.get(top)
    if extra is None:
        return None  # one of ours, or unknown: a bug, let the traceback show it
    verb = f"`edgefleet {command}`" if command else "this command"
    return MissingExtraError(f"{verb} needs the Python package {top!r}, which is not installed: "
                             f"install edgefleet[{extra}] (pip install 'edgefleet[{extra}]')")


def require(command: str, *modules: str) -> None:
    """The verb's import boundary: a missing dependency is named with its extra before any work (and
    before a broad ``except`` deeper down can turn it into a misleading message)."""
    import importlib.util

    for module in modules:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ModuleNotFoundError, ValueError):
            found = False
        if not found:
            err = missing_extra(ModuleNotFoundError(f"No module named {module!r}", name=module), command)
            if err is not None:
                raise err


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("edgefleet")
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        import edgefleet

        return str(getattr(edgefleet, "__version__", "unknown"))


def _cmd_keys_generate(args: argparse.Namespace) -> int:
    from edgefleet import keys
    from edgefleet.errors import KeyFileError

    try:
        priv, pub = keys.generate_keypair(args.out, overwrite=args.force)
    except OSError as exc:  # keys.generate_keypair does not translate its folder/file errors (yet)
        raise KeyFileError(f"--out {args.out}: cannot write the key pair: {exc.strerror or exc}") from exc
    print(f"wrote {priv} (keep secret) and {pub} (key id {keys.key_id(keys.load_public_key(pub))})")
    return 0


def _cmd_compile(args: argparse.Namespace) -> int:
    spark_dir = os.path.isdir(os.path.join(str(args.model), "stages"))  # a saved Spark ML PipelineModel folder
    require("compile", "numpy", "pandas", *(("tensorflow", "keras") if str(args.model).endswith(".keras") else
                                            ("pyspark", "pyarrow") if spark_dir else ("sklearn", "joblib", "skl2onnx", "onnx")))
    from compiler import compile as compile_model
    from compiler.output import parity_line, third_party_output
    from compiler.progress import Progress
    from edgefleet import keys
    from edgefleet_cli.data import load_model, load_sample

    key = keys.load_private_key(args.key)

    with third_party_output(args.verbose) as stream:  # TF/absl/onnx noise held back unless --verbose
        model = load_model(args.model, args.feature_names, args.classes)
        sample = load_sample(args.sample)
        result = compile_model(
            model, sample,
            targets=args.targets.split(","), name=args.name, version=args.version, private_key=key,
            label=args.label, out_dir=args.out, tolerance=args.tolerance,
            allow_parity_failure=args.allow_parity_failure, parity_rows=args.parity_rows,
            progress=Progress(quiet=args.quiet, stream=stream), quantize=args.quantize, quantized_tolerance=args.quantized_tolerance,
        )
    for p in result.manifest["parity"]:
        status = "passed" if p["passed"] else "FAILED (recorded in the manifest)"
        print(f"{p['format']}: {p['runtime']} {p['runtime_version']}, {parity_line(p)}, parity {status}")
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

    if not args.pubkey:
        raise EdgefleetError("--pubkey: give the trusted public key (PEM), or set pubkey in edgefleet.toml")
    manifest = verify(open_bundle(args.bundle), keys.load_public_key(args.pubkey))
    arts = ", ".join(f"{a['format']} ({a['size']} B)" for a in manifest["artifacts"])
    print(f"OK: {manifest['name']} v{manifest['version']} signed by key {manifest['key_id']}; artifacts verified: {arts}")
    return 0


def _cmd_score(args: argparse.Namespace) -> int:
    from edgefleet_cli import score

    if not args.pubkey:
        raise EdgefleetError("--pubkey: give the trusted public key (PEM), or set pubkey in edgefleet.toml")

    return score.run(args)


def _cmd_device_run(args: argparse.Namespace) -> int:
    from runtimes.python.agent import Agent, AgentConfig

    cfg = AgentConfig.from_credential(
        args.credential, data_dir=args.data_dir, server=args.server, device_id=args.device_id, mqtt=args.mqtt,
        poll_seconds=args.poll_seconds, sample_rate=args.sample_rate, include_features=not args.no_features,
        input_dir=Path(args.input_dir) if args.input_dir else None,
    )
    agent = Agent(cfg)  # it logs its start-up summary (server, mqtt, data dir, model) itself, as JSON with --log-format json
    return agent.run()


def _add_agent_group(d: argparse.ArgumentParser, cli_fleet: Any) -> None:
    dsub = d.add_subparsers(dest="device_command", required=True, metavar="ACTION")
    dr = dsub.add_parser("run", help="sync models and telemetry with the fleet server; score offline")
    dr.add_argument("--server", type=http_url, help="fleet server URL (default: from the credential file)")
    dr.add_argument("--device-id", help="this device's id (default: from the credential file)")
    dr.add_argument("--credential", type=path, required=True, help="credential JSON from enrollment (token, trusted keys)")
    dr.add_argument("--data-dir", type=path, required=True, help="where models, the outbox and state live")
    dr.add_argument("--mqtt", type=mqtt_url, help="mqtt://host:port (default: from the credential file; HTTP polling without)")
    dr.add_argument("--poll-seconds", type=number(0, 86400, lo_open=True), default=30.0, help="HTTP assignment poll period while MQTT is down")
    dr.add_argument("--sample-rate", type=number(0, 1), default=1.0, help="fraction of predictions sent as telemetry")
    dr.add_argument("--no-features", action="store_true", help="privacy switch: never send raw features")
    dr.add_argument("--input-dir", type=path, help="score *.jsonl files dropped here (MiNiFi-style); results in INPUT_DIR/scored")
    dr.set_defaults(func=_cmd_device_run)
    cli_fleet.add_agent_parsers(dsub)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="edgefleet", description="Compile, sign, verify and ship ML models to offline edge devices.")
    parser.add_argument("--version", action="version", version=f"edgefleet {_version()}")
    parser.add_argument("--log-level", type=str.upper, choices=logs.LEVELS,
                        help="log threshold (default INFO for `server` and `agent run`, WARNING otherwise)")
    parser.add_argument("--log-format", choices=logs.FORMATS, default="text",
                        help="text, or json: one object a line with ts, level, logger, message, exc")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    k = sub.add_parser("keys", help="manage signing keys")
    ksub = k.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    kg = ksub.add_parser("generate", help="write a new Ed25519 key pair (private.pem, public.pem)")
    kg.add_argument("--out", type=path, required=True, help="folder for the key pair")
    kg.add_argument("--force", action="store_true", help="overwrite an existing private key")
    kg.set_defaults(func=_cmd_keys_generate)

    c = sub.add_parser("compile", help="compile a trained model into a signed, parity-checked bundle")
    c.add_argument("model", type=path, help="joblib/pickle file of a fitted scikit-learn classifier or Pipeline, a .keras file, "
                                                "or a saved Spark ML PipelineModel folder")
    c.add_argument("--feature-names", help="comma-separated sample columns the model takes, in order: for a .keras file, or a "
                                           "scikit-learn model fitted on a numpy array")
    c.add_argument("--classes", help=".keras only: comma-separated class labels in output order (default 0,1)")
    c.add_argument("--sample", type=path, required=True, help="CSV/JSONL/Parquet of data the model was not trained on (schema, statistics, parity)")
    c.add_argument("--label", help="label column in the sample (enables AUROC / AP in the reference metrics)")
    c.add_argument("--name", type=model_name, required=True, help="model name, e.g. churn (the manifest's pattern: lower-case letters, digits, . _ -)")
    c.add_argument("--version", required=True, type=positive_int, help="monotonically increasing integer version")
    c.add_argument("--targets", default="onnx", help="comma-separated: onnx,pmml,tflite,tfjs,coreml,pickle,spark (default onnx)")
    c.add_argument("--key", type=path, required=True, help="Ed25519 private key (from `edgefleet keys generate`)")
    c.add_argument("--out", type=path, required=True, help="bundle folder to write; OUT.tar is written beside it")
    c.add_argument("--tolerance", type=number(0), default=1e-5, help="max |probability difference| per row (default 1e-5)")
    c.add_argument("--parity-rows", type=positive_int, default=5000, help="sample rows scored for parity (default 5000)")
    c.add_argument("--quantize", choices=["float16", "int8"], help="quantize the tflite artifact (Keras, LogisticRegression, MLPClassifier); deltas vs unquantized go in the manifest")
    c.add_argument("--quantized-tolerance", type=number(0), help="parity tolerance of a quantized artifact (default 1e-2 float16, 5e-2 int8)")
    c.add_argument("--allow-parity-failure", action="store_true", help="write the bundle even if parity fails (recorded in the manifest)")
    c.add_argument("--quiet", action="store_true", help="no progress display")
    c.add_argument("--verbose", action="store_true", help="show TensorFlow/absl/onnx output (held back by default)")
    c.set_defaults(func=_cmd_compile)

    i = sub.add_parser("inspect", help="summarize a bundle: formats, sizes, parity, schema, metrics")
    i.add_argument("bundle", type=path, help="bundle folder or .tar")
    i.add_argument("--json", action="store_true", help="machine-readable output")
    i.set_defaults(func=_cmd_inspect)

    v = sub.add_parser("verify", help="check a bundle's signature, then every artifact's size and sha256")
    v.add_argument("bundle", type=path, help="bundle folder or .tar")
    v.add_argument("--pubkey", type=path, help="trusted Ed25519 public key (PEM; default: the config file's pubkey)")
    v.set_defaults(fleet_settings=("pubkey",))
    v.set_defaults(func=_cmd_verify)

    sc = sub.add_parser("score", help="score records offline with a verified bundle")
    sc.add_argument("bundle", type=path, help="bundle folder or .tar")
    sc.add_argument("--pubkey", type=path, help="trusted Ed25519 public key (PEM; default: the config file's pubkey); nothing unverified is scored")
    sc.add_argument("--input", type=path, required=True, help="records: FILE.csv, FILE.jsonl or FILE.parquet")
    sc.add_argument("--backend", choices=["onnx", "tflite", "pmml", "pickle", "spark"],
                    help="force a runtime (default: the first one installed that the bundle offers; pickle and spark only when named)")
    sc.add_argument("--output", type=writable_output_path,
                    help="results file; its extension picks the format (.csv, .jsonl, .ndjson, .parquet); default: JSON Lines on stdout")
    sc.add_argument("--format", choices=["csv", "jsonl", "parquet"], help="output format, whatever the --output extension")
    sc.add_argument("--id-column", help="input column passed through to every result (default: _entity_id, else the first input "
                                        "column that is not a model input)")
    sc.set_defaults(func=_cmd_score, fleet_settings=("pubkey",))

    from edgefleet_cli import fleet as cli_fleet

    _add_agent_group(sub.add_parser("agent", help="the device side: enroll, then run the agent"), cli_fleet)
    _add_agent_group(sub.add_parser("device"), cli_fleet)  # the old spelling: no help, so not listed; still works
    cli_fleet.add_parsers(sub)
    from edgefleet_cli import quickstart

    quickstart.add_parsers(sub)
    from edgefleet_cli import minifi  # minifi package: the ScoreChurn processor for MiNiFi/NiFi
    minifi.add_parsers(sub)
    from edgefleet_cli import batch  # batch-score, monitor aggregate (Spark)
    batch.add_parsers(sub)
    from edgefleet_cli import stream  # kafka, stream-score, train-online (Kafka + Spark Structured Streaming)
    stream.add_parsers(sub)

    try:
        from compiler import retrain
    except ModuleNotFoundError as exc:  # a [device] or [server] install: `retrain` says which extra it needs
        err = missing_extra(exc, "retrain")
        if err is None:
            raise
        stub = sub.add_parser("retrain", help="retrain, compile, upload and roll out a challenger (needs edgefleet[compiler])")
        stub.add_argument("rest", nargs=argparse.REMAINDER)
        stub.set_defaults(func=lambda _args: (_ for _ in ()).throw(err))
    else:
        retrain.add_parser(sub)
        rt = sub.choices["retrain"]
        for action in rt._actions:
            if action.dest == "server":  # env > config file > default, as the other fleet verbs (its token: env or file)
                action.default = None
        rt.set_defaults(fleet_settings=("server",))
    return parser


def _leaf_parser(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The (sub-)sub-command's own parser, so its usage errors name it (``edgefleet publish: error: ...``)."""
    while True:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs or getattr(args, subs[0].dest, None) not in subs[0].choices:
            return parser
        parser = subs[0].choices[getattr(args, subs[0].dest)]


def _quiet_broken_pipe() -> int:
    """stdout's reader went away (``edgefleet inspect B --json | head``): stop quietly, as cat does.

    Python flushes stdout again at exit and would print a second BrokenPipeError: point it at devnull.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    command: str | None = None
    try:
        parser = build_parser()
        args, extra = parser.parse_known_args(argv)
        if extra:
            _leaf_parser(parser, args).error(f"unrecognized arguments: {' '.join(extra)}")
        command = args.command
        logs.configure(args.log_level or logs.default_level(command, getattr(args, "device_command", None)), args.log_format)
        if command == "device":  # through logging, so --log-format json stays one object a line
            import logging

            logging.getLogger("edgefleet_cli").warning("`edgefleet device ...` is now `edgefleet agent ...`; "
                                                       "the old spelling goes in the next release")
        if getattr(args, "fleet_settings", None):
            from edgefleet_cli import config

            config.apply(args, tuple(args.fleet_settings))
        status = int(args.func(args))
        sys.stdout.flush()  # a closed pipe shows here, inside the handler below, not at interpreter exit
        return status
    except EdgefleetError as exc:
        message = " ".join(str(exc).split())  # one line, whatever the message holds
        print(f"{getattr(exc, 'prog', 'edgefleet')}: error: {message}", file=sys.stderr)
        return 1
    except ModuleNotFoundError as exc:
        err = missing_extra(exc, command)
        if err is None:
            raise
        print(f"edgefleet: error: {err}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return _quiet_broken_pipe()
    except KeyboardInterrupt:
        print("edgefleet: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
