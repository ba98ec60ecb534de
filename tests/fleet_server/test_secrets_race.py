"""Server secrets created by processes racing on one fresh data dir: one value wins and every process uses it."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from edgefleet import keys
from fleet_server.secrets import ServerSecrets


def _load(data_dir: str, out: "mp.Queue[tuple[str, str, bytes]]") -> None:
    s = ServerSecrets.load_or_create(Path(data_dir))
    pub = s.signing_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    out.put((s.admin_token, s.mqtt_password, pub))


def test_racing_servers_agree_on_one_token_and_one_key_pair(tmp_path: Path) -> None:
    ctx = mp.get_context("fork")
    for attempt in range(5):
        d = tmp_path / f"data{attempt}"
        d.mkdir()
        q: "mp.Queue[tuple[str, str, bytes]]" = ctx.Queue()
        procs = [ctx.Process(target=_load, args=(str(d), q)) for _ in range(4)]
        for p in procs:
            p.start()
        results = [q.get(timeout=60) for _ in procs]
        for p in procs:
            p.join(30)
            assert p.exitcode == 0
        assert len(set(results)) == 1, results
        token, _, pub = results[0]
        assert (d / "secrets" / "admin-token").read_text().strip() == token
        on_disk = keys.load_public_key(d / "secrets" / "server-key.pub.pem")
        assert on_disk.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw) == pub
        assert not [p.name for p in (d / "secrets").iterdir() if p.name.startswith(".")], "temp files left behind"
