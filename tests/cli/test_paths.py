"""Every path argument is resolved against the caller's working directory (issue 12, "default --data-dir").

The README's own commands, run from a fresh temporary cwd: ``edgefleet server`` with its default
``./fleet-data``, ``edgefleet publish churn-v1.tar`` (a relative path), a device enrolled with the
CLI downloads the artifact over HTTP: 200 and the exact bytes, not 500 FileNotFoundError.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any, Callable

from edgefleet_cli.args import path as path_type
from edgefleet_cli.main import build_parser
from tests.cli.conftest import RunningServer


def test_default_data_dir_is_under_the_cwd_and_devices_download(server_in_cwd: RunningServer, make_bundle: Callable[..., Path]) -> None:
    srv = server_in_cwd
    shutil.copy(make_bundle(1), srv.cwd / "churn-v1.tar")
    pub = srv.cli("publish", "churn-v1.tar")
    assert pub.returncode == 0 and "Traceback" not in pub.stderr, pub.stderr
    assert (srv.cwd / "fleet-data" / "fleet.sqlite").is_file()
    stored = list((srv.cwd / "fleet-data" / "artifacts").glob("*.tar"))
    assert len(stored) == 1, stored

    show = srv.cli("models", "show", "churn", "--json")
    assert show.returncode == 0, show.stderr
    sha = json.loads(show.stdout)["sha256"]
    token = srv.cli("devices", "token", "--group", "stores").stdout.strip()
    enroll = srv.cli("agent", "enroll", "--server", srv.url, "--token", token, "--device-id", "gw-01", "--out", "cred.json")
    assert enroll.returncode == 0, enroll.stderr
    cred = json.loads((srv.cwd / "cred.json").read_text())  # relative --out: written in the caller's cwd

    status, body = srv.get(f"/api/v1/artifacts/{sha}", token=cred["token"])
    assert status == 200, body[:300]
    assert hashlib.sha256(body).hexdigest() == sha == stored[0].stem


def test_every_path_option_is_absolute_after_parsing(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)
    cases = {
        ("server",): "data_dir",
        ("keys", "generate", "--out", "k"): "out",
        ("compile", "m.joblib", "--sample", "s.csv", "--name", "n", "--version", "1", "--key", "k/private.pem", "--out", "b"): "model",
        ("score", "b.tar", "--pubkey", "k/public.pem", "--input", "in.csv", "--output", "out.jsonl"): "output",
        ("agent", "run", "--credential", "c.json", "--data-dir", "dev", "--input-dir", "inbox"): "input_dir",
        ("publish", "b.tar"): "bundle",
        ("verify", "b.tar", "--pubkey", "~/k.pem"): "pubkey",
    }
    for argv, dest in cases.items():
        args = build_parser().parse_args(list(argv))
        for key in ("data_dir", "out", "model", "sample", "key", "pubkey", "input", "output", "credential", "input_dir", "bundle"):
            value = getattr(args, key, None)
            if isinstance(value, str):
                assert Path(value).is_absolute(), (argv, key, value)
        assert getattr(args, dest).startswith(str(tmp_path)) or dest == "pubkey", (argv, dest, getattr(args, dest))
    assert path_type("~/k.pem") == str(Path.home() / "k.pem")
    assert build_parser().parse_args(["server"]).data_dir == str(tmp_path / "fleet-data")
