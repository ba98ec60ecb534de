"""REST scoring throughput of the fleet server at 1, 8 and 32 concurrent clients (issues 5 and 13, "Must show").

A real FleetServer (waitress, one process, SQLite) on loopback with a registered, signed churn
bundle (100-tree RandomForest by default, onnx). Each request is one held-out record, a different
one each time, on a keep-alive connection. Routes, in one run at each concurrency level:

- predict: POST /api/v1/models/churn/predict with the record as JSON;
- v2 infer: POST /v2/models/churn/infer, the same record as an Open Inference Protocol request;
- constant: GET /v2/health/live on the same server (no auth, no scoring: the HTTP stack's ceiling);
- bare waitress, for information: a second waitress in the bench process answering a constant from a
  plain WSGI function. The scoring routes skip Flask on their happy path (fleet_server.api.fastpath)
  while the constant route goes through it, so predict can pass the constant route; this is the floor;
- MLServer 1.7.1 serving the same model, in its own virtualenv this bench creates once under
  ~/.cache/edgefleet-bench/mlserver-venv (pip; skipped with a message if that fails, or with
  --no-mlserver): its mlserver_sklearn runtime on the pickled pipeline, and a custom runtime
  wrapping edgefleet's own Scorer on the same signed bundle (the issue's "same scorer").

The load generator is one separate process with one thread: an epoll loop over N connections
sending pre-built requests (no HTTP library), so it takes as little of the 2 cores as Python can.
Baseline in the same run: the in-process ``Scorer.score(record)`` of the same bundle. Before the
load, a check that micro-batched answers are bit-identical to unbatched ones. PASS/FAIL at 32
clients: predict >= 70 % of the constant route, p95 < 50 ms, >= 5x MLServer with the same scorer.

    .venv/bin/python bench/predict.py [--family rf] [--seconds 4] [--clients 1,8,32] [--no-mlserver]
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from _fleet import compile_bundles, features, pct, register, start_server

TARGET_CEILING = 0.70  # issue 13: predict >= 70 % of the same server's constant-route req/s at 32 clients
TARGET_P95_MS = 50.0  # issue 13: p95 < 50 ms at 32 clients
TARGET_VS_MLSERVER = 5.0  # issue 13: >= 5x MLServer 1.7.1's req/s with the same scorer (its custom runtime around Scorer)


def v2_body(record: dict[str, Any], fields: list[dict[str, Any]]) -> dict[str, Any]:
    """One record as an Open Inference Protocol request: one input per field, BYTES for string categoricals."""
    inputs = []
    for f in fields:
        v = record[f["name"]]
        strings = f["type"] == "categorical" and any(isinstance(c, str) for c in f.get("categories", []))
        dt = "BYTES" if strings else "BOOL" if f["type"] == "boolean" else "FP64"
        inputs.append({"name": f["name"], "shape": [1], "datatype": dt, "data": [v]})
    return {"inputs": inputs}


def load(port: int, raw_requests: list[bytes], clients: int, seconds: float, warmup: float) -> dict[str, Any]:
    """Run in a child process: ``clients`` keep-alive connections driven by one epoll loop, pre-built requests.

    Each connection has one request outstanding (no pipelining): it sends the next request as soon
    as the answer to the previous one is read whole (Content-Length framed). One thread, no HTTP
    library: about 20-30 us of this process's CPU per request, so it takes little from the server.
    """
    import selectors
    import socket

    sel = selectors.DefaultSelector()
    lat: list[float] = []
    errors: list[str] = []
    n_err = 0
    now = time.perf_counter
    t_measure = now() + warmup
    t_end = t_measure + seconds

    class Conn:
        __slots__ = ("sock", "buf", "t0", "i")

    def connect(k: int, i: int) -> Any:
        c = Conn()
        c.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c.sock.setblocking(False)
        c.buf, c.i = b"", i
        sel.register(c.sock, selectors.EVENT_READ, c)
        return c

    def send(c: Any) -> None:
        req = raw_requests[c.i % len(raw_requests)]
        c.i += 1
        c.t0 = now()
        c.sock.setblocking(True)  # requests are small: one sendall, then back to non-blocking reads
        c.sock.sendall(req)
        c.sock.setblocking(False)

    conns = [connect(k, k * 7919) for k in range(clients)]
    for c in conns:
        send(c)
    open_ = clients
    while open_:
        for key, _ in sel.select(timeout=30):
            c = key.data
            try:
                chunk = c.sock.recv(262144)
            except BlockingIOError:
                continue
            except OSError as exc:
                chunk, errors = b"", errors + [repr(exc)][: 5 - len(errors)]
            if not chunk:  # the server closed the connection: count it and reconnect
                n_err += 1
                sel.unregister(c.sock)
                c.sock.close()
                if now() >= t_end:
                    open_ -= 1
                    continue
                fresh = connect(0, c.i)
                send(fresh)
                continue
            c.buf += chunk
            head_end = c.buf.find(b"\r\n\r\n")
            if head_end < 0:
                continue
            head = c.buf[:head_end].lower()
            cl_at = head.find(b"\r\ncontent-length:")
            if cl_at < 0:
                raise RuntimeError(f"answer without Content-Length: {c.buf[:200]!r}")
            length = int(head[cl_at + 17:head.find(b"\r\n", cl_at + 2) if head.find(b"\r\n", cl_at + 2) > 0 else None])
            if len(c.buf) < head_end + 4 + length:
                continue
            t1 = now()
            status = c.buf[9:12]
            if status != b"200":
                n_err += 1
                if len(errors) < 5:
                    errors.append(c.buf[:300].decode("latin-1"))
            elif t_measure <= t1 <= t_end:  # completions in the measured window (a slow peer's too)
                lat.append(t1 - c.t0)
            c.buf = c.buf[head_end + 4 + length:]
            if t1 >= t_end:
                sel.unregister(c.sock)
                c.sock.close()
                open_ -= 1
            else:
                send(c)
    return {"n": len(lat), "seconds": seconds, "lat": lat, "errors": errors, "n_errors": n_err}


def http_request(method: str, path: str, port: int, body: bytes | None, token: str | None) -> bytes:
    """One pre-built HTTP/1.1 keep-alive request."""
    head = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    if token:
        head.append(f"Authorization: Bearer {token}")
    if body is not None:
        head += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + (body or b"")


# --- MLServer 1.7.1, the peer, in its own virtualenv ------------------------------------------

MLSERVER_VENV = Path.home() / ".cache" / "edgefleet-bench" / "mlserver-venv"
MLSERVER_RUNTIME = '''"""An MLServer custom runtime around edgefleet's Scorer (bench/predict.py writes this file)."""
import math

from mlserver import MLModel
from mlserver.codecs import PandasCodec
from mlserver.types import InferenceRequest, InferenceResponse, ResponseOutput

from runtimes.python.scorer import Scorer


def _plain(v):
    if isinstance(v, bytes):
        return v.decode("utf-8")
    if isinstance(v, float) and math.isnan(v):
        return None
    return v.item() if hasattr(v, "item") else v


class EdgefleetScorer(MLModel):
    async def load(self) -> bool:
        extra = self.settings.parameters.extra
        self.scorer = Scorer.from_bundle(extra["bundle"], extra["public_key"])
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        df = PandasCodec.decode_request(payload)
        records = [{k: _plain(v) for k, v in r.items()} for r in df.to_dict("records")]
        preds = self.scorer.score_many(records)
        return InferenceResponse(model_name=self.name, outputs=[
            ResponseOutput(name="probability", shape=[len(preds)], datatype="FP64", data=[p.probability for p in preds])])
'''


def mlserver_python() -> tuple[Path | None, str]:
    """The venv's python with mlserver 1.7.1 (created and installed on first use), or None and why not."""
    import importlib.metadata as md
    import subprocess
    import sys

    py = MLSERVER_VENV / "bin" / "python"
    probe = [str(py), "-c", "import mlserver, mlserver_sklearn, onnxruntime, cryptography, sklearn, uvloop; "
             "print(mlserver.__version__, uvloop.__version__)"]
    ok = py.exists() and subprocess.run(probe, capture_output=True, text=True).stdout.split() == ["1.7.1", "0.21.0"]
    if not ok:
        # the same scikit-learn (for the pickled pipeline), onnxruntime and cryptography (for the Scorer) as this venv;
        # uvloop 0.21: with 0.22+ MLServer 1.7.1's inference worker dies at start ("There is no current event loop")
        pins = [f"{d}=={md.version(d)}" for d in ("scikit-learn", "onnxruntime", "cryptography")] + ["uvloop==0.21.0"]
        print(f"installing MLServer 1.7.1 into {MLSERVER_VENV} (once; pip, a few minutes) ...", flush=True)
        t0 = time.perf_counter()
        try:
            if not py.exists():
                subprocess.run([sys.executable, "-m", "venv", str(MLSERVER_VENV)], check=True, capture_output=True, timeout=300)
            subprocess.run([str(py), "-m", "pip", "install", "-q", "mlserver==1.7.1", "mlserver-sklearn==1.7.1", *pins],
                           check=True, capture_output=True, text=True, timeout=1200)
        except (OSError, subprocess.SubprocessError) as exc:
            tail = (getattr(exc, "stderr", None) or str(exc)).strip().splitlines()[-1:]
            return None, f"the install failed: {tail[0] if tail else type(exc).__name__}"
        print(f"installed in {time.perf_counter() - t0:.0f} s", flush=True)
    return py, "ok"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_mlserver(py: Path, tmp: Path, model: Any, bundle: Path, public_key: Path) -> tuple[Any, int, Path]:
    """MLServer (defaults: one inference worker process) serving churn-sklearn and churn-edgefleet; (process, port, log)."""
    import os
    import subprocess
    import urllib.request

    import joblib

    d = tmp / "mlserver"
    (d / "churn-sklearn").mkdir(parents=True)
    (d / "churn-edgefleet").mkdir()
    joblib.dump(model, d / "churn-sklearn" / "model.joblib")
    port = free_port()
    (d / "settings.json").write_text(json.dumps({"host": "127.0.0.1", "http_port": port, "grpc_port": free_port(),
                                                 "metrics_port": free_port(), "debug": False}))
    (d / "churn-sklearn" / "model-settings.json").write_text(json.dumps({
        "name": "churn-sklearn", "implementation": "mlserver_sklearn.SKLearnModel", "parameters": {"uri": "./model.joblib"}}))
    (d / "churn-edgefleet" / "model-settings.json").write_text(json.dumps({
        "name": "churn-edgefleet", "implementation": "edgefleet_mlserver.EdgefleetScorer",
        "parameters": {"extra": {"bundle": str(bundle), "public_key": str(public_key)}}}))
    (d / "churn-edgefleet" / "edgefleet_mlserver.py").write_text(MLSERVER_RUNTIME)
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{d / 'churn-edgefleet'}"}
    log = tmp / "mlserver.log"
    proc = subprocess.Popen([str(py.parent / "mlserver"), "start", str(d)], env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            ready = []
            for m in ("churn-sklearn", "churn-edgefleet"):
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/models/{m}/ready", timeout=2) as r:
                    ready.append(r.status == 200)
            if all(ready):
                return proc, port, log
        except OSError:
            pass
        time.sleep(0.5)
    stop_process(proc)
    raise RuntimeError(f"MLServer did not get ready in 120 s; its log: {log.read_text(errors='replace')[-1500:]}")


def stop_process(proc: Any) -> None:
    import os
    import signal
    import subprocess

    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)  # its own session: MLServer and its inference worker
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


def fit_sklearn(family: str) -> Any:
    """The pipeline compile_bundles compiled (same data, split and seed), for MLServer's sklearn runtime."""
    from train_churn import make_pipeline

    from edgefleet_cli.samples.telco_churn import CATEGORICAL, LABEL, NUMERIC, make_telco_churn

    df = make_telco_churn(3000, seed=1)
    train = df.iloc[:int(len(df) * 0.7)]
    return make_pipeline(family).fit(train[CATEGORICAL + NUMERIC], train[LABEL])


def _batchers() -> Any:
    from fleet_server.api.predict import _batchers as live

    return list(live.values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", default="rf", help="model family to compile (rf, lr, ...)")
    ap.add_argument("--clients", default="1,8,32")
    ap.add_argument("--seconds", type=float, default=4.0, help="measured seconds per route and concurrency level")
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--no-mlserver", action="store_true", help="skip the MLServer 1.7.1 comparison")
    args = ap.parse_args()
    t_start = time.perf_counter()
    import logging
    import urllib.request

    logging.getLogger("waitress.queue").setLevel(logging.ERROR)  # "Task queue depth is N" once clients > threads

    tmp = Path(tempfile.mkdtemp(prefix="edgefleet-predict-"))
    server = mlserver = bare = None
    try:
        from fleet_server.batching import MicroBatcher
        from fleet_server.serve import HTTP_THREADS
        from runtimes.python import Scorer

        bundles, compile_s = compile_bundles(tmp, args.family)
        path = bundles.make(1)
        server = start_server(tmp, bundles.public_path)
        meta = register(server, path)
        records = features(2000, seed=11)
        token = server.fleet.secrets.admin_token

        # Baseline: the same scorer in-process, one thread, single records (as the endpoint calls it, minus HTTP/JSON).
        scorer = Scorer.from_bundle(path, bundles.public_path)
        for r in records[:200]:
            scorer.score(r)
        base: list[float] = []
        t_end = time.perf_counter() + 2.0
        i = 0
        while time.perf_counter() < t_end:
            r = records[i % len(records)]
            i += 1
            t0 = time.perf_counter()
            scorer.score(r)
            base.append(time.perf_counter() - t0)
        base_rate = len(base) / sum(base)

        def post(port: int, url_path: str, body: Any) -> Any:
            req = urllib.request.Request(f"http://127.0.0.1:{port}{url_path}", data=json.dumps(body).encode(), method="POST",
                                         headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=30) as resp:
                return json.loads(resp.read())

        # The endpoints answer as the scorer does.
        got = post(server.port, "/api/v1/models/churn/predict", records[0])
        want = scorer.score(records[0])
        assert got["probability"] == want.probability and got["model_version"] == 1, (got, want)
        fields = scorer.fields
        v2_got = post(server.port, "/v2/models/churn/infer", v2_body(records[0], fields))
        assert v2_got["outputs"][0]["data"] == [got["probability"]], (v2_got, got)  # the V2 route answers as predict does

        print(f"predict bench: one record per request, {args.family} churn v1 ({meta['size'] / 1024:.0f} KiB bundle, backend "
              f"{scorer.backend_name}; fit+compile {compile_s:.1f}s) on FleetServer (waitress, {HTTP_THREADS} threads, one process) on loopback")
        print("load generator: one process (not the server's), one thread, an epoll loop over N keep-alive connections with "
              "pre-built requests, one outstanding per connection (no HTTP library)")
        # Micro-batching answers bit-identically: 64 concurrent single-record requests against each scored alone.
        batcher = MicroBatcher(scorer, max_wait=1.0, max_rows=64)
        batcher._last_size = 2  # as under load: the leader waits for the others
        answers: list[Any] = [None] * 64
        ts = [threading.Thread(target=lambda k: answers.__setitem__(k, batcher.score([records[k]])), args=(k,)) for k in range(64)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        alone = [scorer.score_many([records[k]]) for k in range(64)]
        assert answers == alone, "a batched answer differs from the unbatched one"
        print(f"micro-batching check: 64 concurrent requests in {batcher.batches} backend call(s), every probability bit-identical "
              "to the request scored alone")
        print(f"baseline in-process Scorer.score (1 thread): {base_rate:8.0f} calls/s   p50 {pct(base, 50) * 1e3:.3f} ms   "
              f"p95 {pct(base, 95) * 1e3:.3f} ms")
        routes: dict[str, tuple[int, list[bytes]]] = {
            "constant": (server.port, [http_request("GET", "/v2/health/live", server.port, None, None)]),
            "predict": (server.port, [http_request("POST", "/api/v1/models/churn/predict", server.port, json.dumps(r).encode(), token)
                                      for r in records]),
            "v2 infer": (server.port, [http_request("POST", "/v2/models/churn/infer", server.port,
                                                    json.dumps(v2_body(r, fields)).encode(), token) for r in records]),
        }
        # For information: the same waitress, no Flask, a constant answer. predict's happy path skips Flask
        # (fleet_server.api.fastpath) while the constant route goes through it, so this is the floor.
        from waitress.server import create_server

        bare_body = b'{"live":true}\n'

        def bare_app(environ: Any, start_response: Any) -> list[bytes]:
            start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(bare_body)))])
            return [bare_body]

        bare = create_server(bare_app, host="127.0.0.1", port=0, threads=HTTP_THREADS)
        threading.Thread(target=bare.run, name="bare-waitress", daemon=True).start()
        bare_port = int(bare.effective_port)
        routes["bare waitress"] = (bare_port, [http_request("GET", "/", bare_port, None, None)])
        print("routes: predict = POST one JSON record; v2 infer = the same record as an Open Inference Protocol request (one input "
              "per field); constant = GET /v2/health/live on the same server (no auth, no scoring: the HTTP stack's ceiling); "
              "bare waitress = a second waitress in this process answering a constant from a 3-line WSGI function (no Flask; "
              "predict's happy path skips Flask too, the constant route does not)")

        mls_note = "SKIPPED (--no-mlserver)"
        if not args.no_mlserver:
            py, why = mlserver_python()
            if py is None:
                mls_note = f"SKIPPED: MLServer 1.7.1 could not be installed ({why})"
                print(mls_note)
            else:
                t0 = time.perf_counter()
                model = fit_sklearn(args.family)
                mlserver, mport, mlog = start_mlserver(py, tmp, model, path, bundles.public_path)

                def mls(r: dict[str, Any]) -> dict[str, Any]:  # MLServer's pandas codec: the V2 columns plus content_type
                    return {**v2_body(r, fields), "parameters": {"content_type": "pd"}}

                def sk_body(r: dict[str, Any]) -> dict[str, Any]:
                    return {**mls(r), "outputs": [{"name": "predict_proba"}]}

                ef = post(mport, "/v2/models/churn-edgefleet/infer", mls(records[0]))
                assert ef["outputs"][0]["data"] == [want.probability], (ef, want)  # the same scorer, the same answer
                sk = post(mport, "/v2/models/churn-sklearn/infer", sk_body(records[0]))
                print(f"MLServer 1.7.1 ({MLSERVER_VENV}; default settings: one inference worker process) on loopback, up in "
                      f"{time.perf_counter() - t0:.0f} s. mls sklearn = its mlserver_sklearn runtime (predict_proba "
                      f"{sk['outputs'][0]['data']}); mls edgefleet = a custom runtime wrapping edgefleet's Scorer (probability "
                      f"{ef['outputs'][0]['data']}, equal to edgefleet's); both get V2 pandas-codec requests")
                routes["mls sklearn"] = (mport, [http_request("POST", "/v2/models/churn-sklearn/infer", mport,
                                                             json.dumps(sk_body(r)).encode(), None) for r in records])
                routes["mls edgefleet"] = (mport, [http_request("POST", "/v2/models/churn-edgefleet/infer", mport,
                                                               json.dumps(mls(r)).encode(), None) for r in records])

        print(f"\n{'route':>13} {'clients':>7} {'req/s':>8} {'x 1 client':>10} {'/ Scorer':>8} {'/ const':>8} {'p50 ms':>8} "
              f"{'p95 ms':>8} {'max ms':>8} {'errors':>6}")
        ctx = mp.get_context("spawn")
        levels = [int(x) for x in args.clients.split(",")]
        results: dict[tuple[str, int], dict[str, Any]] = {}
        with ctx.Pool(1) as pool:
            for c in levels:
                for route, (port, reqs) in routes.items():
                    results[(route, c)] = pool.apply(load, (port, reqs, c, args.seconds, args.warmup))
        for route in ("predict", "v2 infer", "constant", "bare waitress", *[r for r in routes if r.startswith("mls")]):
            first = None
            for c in levels:
                r = results[(route, c)]
                rate = r["n"] / r["seconds"]
                const = results[("constant", c)]["n"] / results[("constant", c)]["seconds"]
                first = first or rate or 1.0
                lat = r["lat"] or [math.nan]
                print(f"{route:>13} {c:7d} {rate:8.0f} {rate / first:10.2f} {rate / base_rate:8.1%} {rate / const:8.0%} "
                      f"{pct(lat, 50) * 1e3:8.2f} {pct(lat, 95) * 1e3:8.2f} {max(lat) * 1e3:8.2f} {r['n_errors']:6d}"
                      + (f"  {r['errors'][:1]}" if r["errors"] else ""))
        print(f"\n'/ Scorer' = req/s over the in-process scorer's calls/s; '/ const' = over the edgefleet constant route's req/s at "
              f"the same concurrency; total {time.perf_counter() - t_start:.0f} s")
        for b in _batchers():
            print(f"micro-batching: {b.requests} scoring requests in {b.batches} backend calls ({b.requests / max(b.batches, 1):.2f} "
                  "per call)")
        top = max(levels)
        verdict = lambda ok: "PASS" if ok else "FAIL"  # noqa: E731
        const_rate = results[("constant", top)]["n"] / results[("constant", top)]["seconds"]
        for route in ("predict", "v2 infer"):
            r = results[(route, top)]
            rate, p95 = r["n"] / r["seconds"], pct(r["lat"], 95) * 1e3
            print(f"target {route} at {top} clients: {rate:.0f} req/s = {rate / const_rate:.0%} of the constant route "
                  f"(>= {TARGET_CEILING:.0%}): {verdict(rate >= TARGET_CEILING * const_rate and r['n_errors'] == 0)}; "
                  f"p95 {p95:.1f} ms (< {TARGET_P95_MS:.0f} ms): {verdict(p95 < TARGET_P95_MS)}")
        bare_rate = results[("bare waitress", top)]["n"] / results[("bare waitress", top)]["seconds"]
        predict_rate = results[("predict", top)]["n"] / results[("predict", top)]["seconds"]
        print(f"for information: predict at {top} clients = {predict_rate / bare_rate:.0%} of a bare waitress constant answer "
              f"({bare_rate:.0f} req/s, no Flask), the constant route {const_rate / bare_rate:.0%} of it")
        if ("mls edgefleet", top) in results:
            ours = results[("predict", top)]["n"] / results[("predict", top)]["seconds"]
            for peer in ("mls edgefleet", "mls sklearn"):
                r = results[(peer, top)]
                theirs = r["n"] / r["seconds"]
                ratio = ours / theirs if theirs else math.inf
                same = peer == "mls edgefleet"
                print(f"target predict >= {TARGET_VS_MLSERVER:.0f}x MLServer ({peer.removeprefix('mls ')} runtime) at {top} clients: "
                      f"{ours:.0f} / {theirs:.0f} req/s = {ratio:.1f}x"
                      + (f": {verdict(ratio >= TARGET_VS_MLSERVER and r['n_errors'] == 0)}" if same else " (for information: its own scorer)"))
        else:
            print(f"target >= {TARGET_VS_MLSERVER:.0f}x MLServer 1.7.1 with the same scorer: {mls_note}")
    finally:
        if mlserver is not None:
            stop_process(mlserver)
        if bare is not None:
            bare.close()
        if server is not None:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)



if __name__ == "__main__":
    main()
