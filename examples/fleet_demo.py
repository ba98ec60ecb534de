"""The fleet half of `make demo`: server, publish, enroll devices, staged rollout, REST scoring.

Runs the real CLI verbs as a user would, against `edgefleet server` on loopback (SQLite and the
embedded broker), with three device agents scoring offline from a drop folder. Everything is
bounded and stopped at the end.

    python examples/fleet_demo.py --out demo-out
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent / "edgefleet"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(*args: str, env: dict[str, str]) -> str:
    print(f"$ edgefleet {' '.join(args)}", flush=True)
    proc = subprocess.run([str(BIN), *args], capture_output=True, text=True, timeout=120, env=env)
    out = (proc.stdout + proc.stderr).strip()
    if out:
        print("  " + out.replace("\n", "\n  "), flush=True)
    if proc.returncode != 0:
        raise SystemExit(f"edgefleet {args[0]} failed with exit {proc.returncode}")
    return proc.stdout


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="demo-out")
    args = ap.parse_args()
    out = Path(args.out).resolve()
    data = out / "fleet-data"
    shutil.rmtree(data, ignore_errors=True)
    port, mqtt_port = free_port(), free_port()
    server_url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "EDGEFLEET_SERVER": server_url}
    procs: list[subprocess.Popen[str]] = []
    try:
        print(f"$ edgefleet server --data-dir {data} --port {port} --mqtt-port {mqtt_port} --trust-key keys/public.pem", flush=True)
        server = subprocess.Popen([str(BIN), "server", "--data-dir", str(data), "--port", str(port), "--mqtt-port", str(mqtt_port),
                                   "--trust-key", str(out / "keys" / "public.pem")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        procs.append(server)
        for _ in range(2):
            print("  " + (server.stdout.readline().strip() if server.stdout else ""), flush=True)
        tok = ["--token-file", str(data / "secrets" / "admin-token")]
        run("publish", str(out / "churn-v1.tar"), *tok, env=env)
        for i in range(3):
            enroll_token = run("devices", "token", "--group", "stores", *tok, env=env).strip()
            cred = out / f"device-{i}.json"
            run("agent", "enroll", "--token", enroll_token, "--device-id", f"store-{i}", "--out", str(cred), env=env)
            inbox = out / f"inbox-{i}"
            shutil.rmtree(inbox, ignore_errors=True)
            inbox.mkdir()
            procs.append(subprocess.Popen([str(BIN), "agent", "run", "--credential", str(cred), "--data-dir", str(out / f"device-{i}"),
                                           "--input-dir", str(inbox)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True))
        time.sleep(2)
        run("rollout", "start", "--model", "churn", "--steps", "34,100", "--groups", "stores", *tok, env=env)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            status = subprocess.run([str(BIN), "rollout", "status", *tok], capture_output=True, text=True, env=env).stdout
            if "COMPLETED" in status or "HALTED" in status:
                break
            time.sleep(1)
        run("rollout", "status", *tok, env=env)
        run("devices", "list", *tok, env=env)
        # A device scores offline from its drop folder; the server scores over REST.
        manifest = json.loads((out / "churn-v1" / "manifest.json").read_text())
        rows = manifest["canary"]["rows"]
        rec = rows[len(rows) // 2]["input"]  # a customer in the middle of the score range
        (out / "inbox-0" / "batch.jsonl").write_text(json.dumps({**rec, "_entity_id": "C-42"}) + "\n")
        scored = out / "inbox-0" / "scored" / "batch.jsonl"
        for _ in range(50):
            if scored.exists():
                break
            time.sleep(0.2)
        print(f"device store-0 scored offline: {scored.read_text().strip() if scored.exists() else 'not yet'}")
        admin = (data / "secrets" / "admin-token").read_text().strip()
        import urllib.request

        req = urllib.request.Request(f"{server_url}/api/v1/models/churn/predict", data=json.dumps(rec).encode(), method="POST",
                                     headers={"Authorization": f"Bearer {admin}", "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            print(f"REST POST /api/v1/models/churn/predict -> {resp.read().decode().strip()}")
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()


if __name__ == "__main__":
    main()
