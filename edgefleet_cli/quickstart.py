"""``edgefleet samples`` and ``edgefleet quickstart``: the first screen of the README.

    edgefleet samples churn --out DIR     # synthetic telco customers and a fitted churn pipeline
    edgefleet quickstart [--dir DIR] [--port 8080] [--mqtt-port 1883] [--once] [--open]

``quickstart`` does what the README then explains one command at a time, and prints each of
those commands before it runs it (the same CLI, as a subprocess), so the output is a tutorial:

1. ``edgefleet samples churn`` (train.csv, holdout.csv, customers.csv, outcomes.csv, a drifted week 2, churn_rf.joblib);
2. ``edgefleet keys generate`` and ``edgefleet compile`` (ONNX, parity-checked, signed);
3. ``edgefleet server`` in the background (logs in DIR/server.log), waiting for ``/readyz``;
4. ``edgefleet publish``, ``edgefleet devices token``, ``edgefleet agent enroll``;
5. ``edgefleet agent run`` in the background (logs in DIR/agent.log) with an inbox folder;
6. ``edgefleet rollout start`` and a wait until the agent has installed the model;
7. customers.csv dropped into the agent's inbox (scored offline on the device);
8. the demo and dashboard URLs.

Then it keeps the server and the agent running until Ctrl-C (or SIGTERM), and stops both.
``--once`` checks that both pages answer and stops at once (``make demo`` and the tests use it).
Everything lives under ``--dir`` (default ``./edgefleet-quickstart``); a second run reuses the
data and keys it finds there. Each step that fails stops the run with one line naming the step
and the log to read.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import webbrowser
from pathlib import Path
from types import FrameType
from typing import Any

from edgefleet.errors import EdgefleetError
from edgefleet_cli import args as cli_types

__all__ = ["QuickstartError", "add_parsers", "write_churn_sample"]


class QuickstartError(EdgefleetError):
    """A quickstart step failed; the message names the step and where its output is."""


# -- samples -------------------------------------------------------------------------------

def write_churn_sample(out: Path, rows: int = 6000, seed: int = 0, quiet: bool = False) -> dict[str, Path]:
    """Write the sample churn data and a fitted random-forest pipeline into ``out``.

    ``train.csv`` (70 %, with the label) trains; ``holdout.csv`` (30 %, with the label) is the compile
    sample; ``customers.csv`` is the holdout without the label (what a device scores), and
    ``outcomes.csv`` holds ``customerID,Churn`` (the delayed labels that arrive later).
    ``customers-week2.csv`` and ``outcomes-week2.csv`` are a later week with a fiber outage (drifted).
    """
    import joblib

    from edgefleet_cli.samples.telco_churn import LABEL, fit_rf, make_telco_churn

    out.mkdir(parents=True, exist_ok=True)
    df = make_telco_churn(rows, seed=seed)
    split = int(len(df) * 0.7)
    train, holdout = df.iloc[:split], df.iloc[split:]
    paths = {name: out / f"{name}.csv" for name in ("train", "holdout", "customers", "outcomes")}
    train.to_csv(paths["train"], index=False)
    holdout.to_csv(paths["holdout"], index=False)
    holdout.drop(columns=[LABEL]).to_csv(paths["customers"], index=False)
    holdout[["customerID", LABEL]].to_csv(paths["outcomes"], index=False)
    # Week 2: new customers during a fiber outage (churn log-odds of fiber customers +3), so a model retrained on
    # week 2's labeled telemetry beats the week-1 model on the newest rows (the README's retraining example).
    week2 = make_telco_churn(max(int(rows * 0.3), 10), seed=seed + 1, outage=3.0)
    week2["customerID"] = week2["customerID"].str.replace(f"C{seed + 1:03d}-", f"W2{seed:03d}-", regex=False)
    paths["customers-week2"] = out / "customers-week2.csv"
    paths["outcomes-week2"] = out / "outcomes-week2.csv"
    week2.drop(columns=[LABEL]).to_csv(paths["customers-week2"], index=False)
    week2[["customerID", LABEL]].to_csv(paths["outcomes-week2"], index=False)
    model = fit_rf(train)
    paths["model"] = out / "churn_rf.joblib"
    joblib.dump(model, paths["model"])
    if not quiet:
        print(f"wrote {len(train)} training rows, {len(holdout)} holdout rows and a fitted {type(model.steps[-1][1]).__name__} "
              f"into {out}: {', '.join(p.name for p in paths.values())}")
    return paths


def _cmd_samples(args: argparse.Namespace) -> int:
    write_churn_sample(Path(args.out), rows=args.rows, seed=args.seed)
    return 0


# -- quickstart ------------------------------------------------------------------------------

class _Run:
    """The quickstart's children and how to show a command the way a user would type it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.children: list[tuple[str, subprocess.Popen[bytes], Path]] = []

    def show(self, argv: list[str]) -> str:
        cwd = Path.cwd()

        def rel(a: str) -> str:
            if os.path.isabs(a):
                try:
                    return str(Path(a).relative_to(cwd))
                except ValueError:
                    return a
            return a

        return "$ edgefleet " + " ".join(shlex.quote(rel(a)) for a in argv)

    def cli(self, step: str, argv: list[str], *, capture: bool = False, quiet: bool = False) -> str:
        if not quiet:
            print(self.show(argv), flush=True)
        proc = subprocess.run([sys.executable, "-m", "edgefleet_cli.main", *argv], stdout=subprocess.PIPE if capture else None,
                              stderr=subprocess.PIPE if capture else None, text=True)
        if proc.returncode != 0:
            detail = (proc.stderr or "").strip().splitlines()[-1:] if capture else []
            raise QuickstartError(f"step '{step}' failed (exit {proc.returncode})" + (f": {detail[0]}" if detail else ""))
        return proc.stdout or ""

    def background(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = self.root / f"{name}.log"
        print(self.show(argv) + f"  &   # logs: {self.show_path(log)}", flush=True)
        fh = open(log, "ab")
        proc = subprocess.Popen([sys.executable, "-m", "edgefleet_cli.main", *argv], stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)
        fh.close()
        self.children.append((name, proc, log))
        return proc

    def show_path(self, p: Path) -> str:
        try:
            return str(p.relative_to(Path.cwd()))
        except ValueError:
            return str(p)

    def check_alive(self) -> None:
        for name, proc, log in self.children:
            if proc.poll() is not None:
                tail = _tail(log)
                raise QuickstartError(f"the {name} exited (status {proc.returncode}); last line of {self.show_path(log)}: {tail}")

    def stop(self) -> None:
        for name, proc, _ in reversed(self.children):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                print(f"stopped the {name}", flush=True)
        self.children.clear()


def _tail(log: Path) -> str:
    try:
        lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "(no log)"
    return lines[-1] if lines else "(empty log)"


def _get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - a loopback URL this command built
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()
    except (urllib.error.URLError, OSError):
        return 0, b""


def _wait(run: _Run, what: str, timeout: float, probe: Any) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        run.check_alive()
        got = probe()
        if got:
            return got
        if time.monotonic() > deadline:
            raise QuickstartError(f"timed out after {timeout:.0f}s waiting for {what}; see the logs in {run.show_path(run.root)}")
        time.sleep(0.3)


def _cmd_quickstart(args: argparse.Namespace) -> int:
    root = Path(args.dir)
    root.mkdir(parents=True, exist_ok=True)
    for option in ("port", "mqtt_port"):  # 0 picks a free port here, so the URLs printed are the real ones
        setattr(args, option, _require_free_port(getattr(args, option), "--" + option.replace("_", "-")))
    url = f"http://127.0.0.1:{args.port}"
    run = _Run(root)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt  # SIGTERM stops the children as Ctrl-C does

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM,)}
    try:
        data = root / "data"
        if not (data / "churn_rf.joblib").is_file():
            print(run.show(["samples", "churn", "--out", str(data)]), flush=True)
            write_churn_sample(data)
        keys = root / "keys"
        if not (keys / "private.pem").is_file():
            run.cli("keys", ["keys", "generate", "--out", str(keys)])
        bundle = root / "build" / "churn-v1.tar"
        if not bundle.is_file():
            run.cli("compile", ["compile", str(data / "churn_rf.joblib"), "--sample", str(data / "holdout.csv"), "--label", "Churn",
                                "--name", "churn", "--version", "1", "--targets", "onnx", "--key", str(keys / "private.pem"),
                                "--out", str(root / "build" / "churn-v1")])
        fleet_data = root / "fleet-data"
        run.background("server", ["server", "--data-dir", str(fleet_data), "--port", str(args.port), "--mqtt-port", str(args.mqtt_port),
                                  "--trust-key", str(keys / "public.pem")])
        _wait(run, f"the server at {url}/readyz", 60, lambda: _get(f"{url}/readyz")[0] == 200)
        token_file = fleet_data / "secrets" / "admin-token"
        admin = ["--server", url, "--token-file", str(token_file)]
        run.cli("publish", ["publish", str(bundle), *admin])
        device = "quickstart-01"
        cred = root / "agent" / "cred.json"
        (root / "agent").mkdir(exist_ok=True)
        if not cred.is_file():
            token = run.cli("token", ["devices", "token", "--group", "quickstart", *admin], capture=True, quiet=True).strip()
            print("$ edgefleet agent enroll --token \"$(edgefleet devices token --group quickstart)\" ...", flush=True)
            run.cli("enroll", ["agent", "enroll", "--server", url, "--token", token, "--device-id", device, "--out", str(cred)], quiet=True)
        inbox = root / "agent" / "inbox"
        inbox.mkdir(exist_ok=True)
        run.background("agent", ["agent", "run", "--credential", str(cred), "--data-dir", str(root / "agent" / "data"),
                                 "--input-dir", str(inbox)])
        out = json.loads(run.cli("rollout", ["rollout", "start", "--model", "churn", "--steps", "100", "--groups", "quickstart", "--json", *admin],
                                 capture=True) or "{}")
        rid = out.get("id")
        print(f"rollout {rid} started; waiting for the agent to download, verify and install churn v1", flush=True)

        def installed() -> bool:
            doc = run.cli("status", ["rollout", "status", str(rid), "--json", *admin], capture=True, quiet=True)
            r = json.loads(doc or "{}")
            counts = r.get("counts") or {}
            if str(r.get("state", "")).lower() in ("failed", "aborted", "halted", "rolled_back"):
                raise QuickstartError(f"rollout {rid} ended {r.get('state')}: {r.get('reason')}; see {run.show_path(root / 'agent.log')}")
            return bool(counts.get("installed", 0) >= 1)

        _wait(run, f"rollout {rid} to reach the agent", 120, installed)
        print(f"the agent runs churn v1; scoring {run.show_path(data / 'customers.csv')} offline through its inbox", flush=True)
        shutil.copyfile(data / "customers.csv", inbox / ".customers.csv.part")
        os.replace(inbox / ".customers.csv.part", inbox / "customers.csv")
        scored = inbox / "scored"
        _wait(run, "the agent to score customers.csv", 60, lambda: scored.is_dir() and any(scored.iterdir()))
        pages = {"demo": f"{url}/demo/", "dashboard": f"{url}/dashboard/"}
        for name, page in pages.items():
            status, _ = _get(page)
            if status != 200:
                raise QuickstartError(f"the {name} page {page} answered HTTP {status}")
        print("\nedgefleet is running:")
        print(f"  demo       {pages['demo']}   (scores in the browser, offline after the first visit)")
        print(f"  dashboard  {pages['dashboard']}   (admin token: {run.show_path(token_file)})")
        print(f"  logs       {run.show_path(root / 'server.log')}, {run.show_path(root / 'agent.log')}")
        if args.open:
            webbrowser.open(pages["demo"])
        if args.once:
            return 0
        print("press Ctrl-C to stop", flush=True)
        while True:
            run.check_alive()
            time.sleep(1.0)
    except KeyboardInterrupt:
        print("", flush=True)
        return 0
    finally:
        run.stop()
        for s, h in old.items():
            signal.signal(s, h)


def _require_free_port(port: int, option: str) -> int:
    """``port`` if 127.0.0.1 can listen on it (a free one for 0), else one line naming the option."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # As the real listeners do (Mosquitto, waitress): a connection left in TIME_WAIT is not "in use", a listener is.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError as exc:
            raise QuickstartError(f"{option} {port}: cannot listen on 127.0.0.1:{port} ({exc.strerror}); pick another with {option}") from exc
        return int(s.getsockname()[1])


def _cmd_ready(args: argparse.Namespace) -> int:
    """Wait until the server's /readyz answers 200; one line naming what is not ready when the time is up."""
    url = args.server.rstrip("/") + "/readyz"
    deadline = time.monotonic() + args.timeout
    status, body = 0, b""
    while True:
        status, body = _get(url, timeout=min(5.0, max(args.timeout, 0.5)))
        if status == 200:
            print(f"ready: {args.server}")
            return 0
        if time.monotonic() >= deadline:
            break
        time.sleep(0.25)
    if status == 0:
        raise QuickstartError(f"--server {args.server}: nothing answered at {url} within {args.timeout:g}s; is `edgefleet server` running?")
    try:
        failing = json.loads(body).get("failing") or []
    except (ValueError, AttributeError):
        failing = []
    what = f"not ready: {', '.join(map(str, failing))}" if failing else f"HTTP {status}"
    raise QuickstartError(f"--server {args.server}: {what} after {args.timeout:g}s (see the server's log)")


def add_parsers(sub: Any) -> None:
    r = sub.add_parser("ready", help="wait until a fleet server is ready (its /readyz answers 200)")
    r.add_argument("--server", type=cli_types.http_url, help="fleet server URL (default: EDGEFLEET_SERVER, the config file's server, "
                                                               "http://127.0.0.1:8080)")
    r.add_argument("--timeout", type=cli_types.number(0), default=60.0, help="seconds to wait (default 60)")
    r.set_defaults(func=_cmd_ready, fleet_settings=("server",))

    sa = sub.add_parser("samples", help="write sample data and a fitted model to try edgefleet with")
    ssub = sa.add_subparsers(dest="sample", required=True, metavar="SAMPLE")
    ch = ssub.add_parser("churn", help="synthetic telco churn: train/holdout/customers/outcomes CSVs and a fitted random forest")
    ch.add_argument("--out", type=cli_types.path, default=cli_types.path("."), help="folder to write into (default: the working directory)")
    ch.add_argument("--rows", type=cli_types.positive_int, default=6000, help="customers to generate (default 6000)")
    ch.add_argument("--seed", type=int, default=0)
    ch.set_defaults(func=_cmd_samples)

    q = sub.add_parser("quickstart", help="train, compile, serve, enroll an agent, roll out; print the demo and dashboard URLs")
    q.add_argument("--dir", type=cli_types.path, default=cli_types.path("edgefleet-quickstart"),
                   help="where everything goes (default ./edgefleet-quickstart; reused by a second run)")
    q.add_argument("--port", type=cli_types.port, default=8080, help="HTTP port (default 8080)")
    q.add_argument("--mqtt-port", type=cli_types.port, default=1883,
                   help="embedded MQTT broker port (default 1883)")
    q.add_argument("--once", action="store_true", help="check the pages answer, then stop everything and exit")
    q.add_argument("--open", action="store_true", help="open the demo page in a browser")
    q.set_defaults(func=_cmd_quickstart)
