"""REST scoring throughput of the fleet server at 1, 8 and 32 concurrent clients (issue 5, "Must show").

A real FleetServer (waitress, 8 threads, SQLite) on loopback with a registered, signed churn
bundle (100-tree RandomForest by default, onnx). Clients are threads in a separate process (so
they do not share the server's GIL), each with its own keep-alive ``http.client`` connection,
POSTing one JSON record per request to /api/v1/models/churn/predict, each a different held-out
record. Baseline in the same run: the in-process ``Scorer.score(record)`` of the same bundle, one
thread, the device runtime's scorer that the endpoint uses.

    .venv/bin/python bench/predict.py [--family rf] [--seconds 5] [--clients 1,8,32]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from _fleet import compile_bundles, features, pct, register, start_server


def load(port: int, token: str, records: list[dict[str, Any]], clients: int, seconds: float, warmup: float) -> dict[str, Any]:
    """Run in a child process: ``clients`` threads, keep-alive, single-record POSTs for ``seconds``."""
    import http.client

    bodies = [json.dumps(r).encode() for r in records]
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    lat: list[list[float]] = [[] for _ in range(clients)]
    errors: list[str] = []
    t_measure = time.perf_counter() + warmup
    t_end = t_measure + seconds
    barrier = threading.Barrier(clients)

    def worker(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        i = k * 7919
        barrier.wait()
        while True:
            t0 = time.perf_counter()
            if t0 >= t_end:
                break
            body = bodies[i % len(bodies)]
            i += 1
            try:
                conn.request("POST", "/api/v1/models/churn/predict", body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
            except (OSError, http.client.HTTPException) as exc:
                errors.append(repr(exc))
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                continue
            t1 = time.perf_counter()
            if resp.status != 200:
                errors.append(f"{resp.status} {data[:120]!r}")
            elif t0 >= t_measure:
                lat[k].append(t1 - t0)
        conn.close()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    flat = [x for xs in lat for x in xs]
    return {"n": len(flat), "seconds": seconds, "lat": flat, "errors": errors[:5], "n_errors": len(errors)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", default="rf", help="model family to compile (rf, lr, ...)")
    ap.add_argument("--clients", default="1,8,32")
    ap.add_argument("--seconds", type=float, default=5.0, help="measured seconds per concurrency level")
    ap.add_argument("--warmup", type=float, default=1.0)
    args = ap.parse_args()
    t_start = time.perf_counter()
    import logging

    logging.getLogger("waitress.queue").setLevel(logging.ERROR)  # "Task queue depth is N" once clients > threads

    tmp = Path(tempfile.mkdtemp(prefix="edgefleet-predict-"))
    server = None
    try:
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
        # The endpoint answers the same as the scorer.
        import urllib.request

        req = urllib.request.Request(server.url + "/api/v1/models/churn/predict", data=json.dumps(records[0]).encode(), method="POST",
                                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            got = json.loads(resp.read())
        want = scorer.score(records[0])
        assert abs(got["probability"] - want.probability) < 1e-12 and got["model_version"] == 1, (got, want)

        print(f"predict bench: POST /api/v1/models/churn/predict, one record per request, keep-alive http.client threads in a "
              f"separate process -> FleetServer (waitress, 8 threads) on loopback; model {args.family} churn v1 "
              f"({meta['size'] / 1024:.0f} KiB bundle, backend {scorer.backend_name}); fit+compile {compile_s:.1f}s")
        print(f"baseline in-process Scorer.score (1 thread): {base_rate:8.0f} calls/s   p50 {pct(base, 50) * 1e3:.3f} ms   "
              f"p95 {pct(base, 95) * 1e3:.3f} ms")
        print(f"\n{'clients':>7} {'req/s':>8} {'x 1 client':>10} {'/ Scorer':>8} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} {'errors':>6}")
        ctx = mp.get_context("spawn")
        first = None
        with ctx.Pool(1) as pool:
            for c in [int(x) for x in args.clients.split(",")]:
                r = pool.apply(load, (server.port, token, records, c, args.seconds, args.warmup))
                rate = r["n"] / r["seconds"]
                first = first or rate
                lat = r["lat"]
                print(f"{c:7d} {rate:8.0f} {rate / first:10.2f} {rate / base_rate:8.1%} {pct(lat, 50) * 1e3:8.2f} "
                      f"{pct(lat, 95) * 1e3:8.2f} {max(lat) * 1e3:8.2f} {r['n_errors']:6d}" + (f"  {r['errors']}" if r["errors"] else ""))
        print(f"\n'/ Scorer' = REST req/s over the in-process scorer's calls/s; total {time.perf_counter() - t_start:.0f} s")
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
