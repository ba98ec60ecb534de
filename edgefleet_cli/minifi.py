"""``edgefleet minifi package --out DIR``: the ScoreChurn processor and sample C2 settings for MiNiFi and NiFi hosts.

Writes, without any network access:

    DIR/minifi/minifi-python/nifi_python_processors/ScoreChurn.py   MiNiFi C++ shell
    DIR/minifi/minifi-python/edgefleet_lib/                         edgefleet's own code it imports
    DIR/minifi/minifi.properties.c2                                 the C2 section (Basic via URL user-info)
    DIR/nifi/python/extensions/ScoreChurn.py                        NiFi 2.x shell
    DIR/nifi/python/edgefleet_lib/
    DIR/nifi/bootstrap.conf.c2                                      the Java agent's C2 section (token in the path)
    DIR/nifi-edgefleet-nar-<version>.nar                            for air-gapped NiFi: ScoreChurn.py at the root,
                                                                    edgefleet in NAR-INF/bundled-dependencies/
    DIR/requirements.txt                                            numpy, onnxruntime, cryptography as installed here
    DIR/README.txt                                                  what goes where

With ``--enroll-token`` the verb first enrolls ``--device-id`` with the server as kind ``minifi``
and writes the returned token and the server's publisher keys into the settings and
``DIR/keys/`` (then nothing needs filling in); without it the settings carry placeholders.

The processor files bootstrap ``../edgefleet_lib`` onto ``sys.path``; numpy, onnxruntime and
cryptography are binary wheels and are named in requirements.txt, not copied (docs/minifi.md).
"""

from __future__ import annotations

import argparse
import shutil
import zipfile
from importlib import metadata
from pathlib import Path
from typing import Any

from edgefleet.errors import EdgefleetError
from edgefleet_cli import args as cli_types

VERSION = "1.0.0"
REQUIREMENTS = ("numpy", "onnxruntime", "cryptography")
BOOTSTRAP = '''
import os as _os
import sys as _sys

# edgefleet's own code ships beside this file (edgefleet minifi package); in a NAR it is in NAR-INF/bundled-dependencies
_LIB = _os.path.join(_os.path.dirname(_os.path.dirname(_os.path.abspath(__file__))), "edgefleet_lib")
if _os.path.isdir(_LIB) and _LIB not in _sys.path:
    _sys.path.insert(0, _LIB)
'''


class PackageError(EdgefleetError):
    """The output folder cannot be written."""


def _sources() -> list[tuple[Path, str]]:
    """(file, path inside the lib folder) of every module the processor imports, and the manifest schema."""
    import edgefleet
    import runtimes

    out: list[tuple[Path, str]] = []
    roots = [(Path(edgefleet.__file__).parent, "edgefleet"), (Path(runtimes.__file__).parent, "runtimes")]
    for root, name in roots:
        for f in sorted(root.rglob("*")):
            rel = f.relative_to(root)
            if not f.is_file() or "__pycache__" in rel.parts or f.suffix not in (".py", ".json", ".typed"):
                continue
            if name == "runtimes" and rel.parts[0] not in ("__init__.py", "py.typed", "python", "nifi"):
                continue  # the JS runtime and anything else a processor never imports
            out.append((f, f"{name}/{rel.as_posix()}"))
    return out


def _shell(kind: str) -> str:
    import runtimes.nifi

    # read, not imported: the shells import the host's nifiapi, which exists only inside NiFi/MiNiFi
    src = (Path(runtimes.nifi.__file__).parent / "shells" / f"{kind}_score_churn.py").read_text(encoding="utf-8")
    head, sep, rest = src.partition("from __future__ import annotations\n")
    return head + sep + BOOTSTRAP + rest


def _requirements() -> str:
    lines = ["# what ScoreChurn needs beyond edgefleet's own code (versions as installed where this was packaged)"]
    for dist in REQUIREMENTS:
        try:
            lines.append(f"{dist}=={metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            lines.append(dist)
    return "\n".join(lines) + "\n"


def _minifi_properties(server: str, device_id: str, token: str) -> str:
    host = server.split("://", 1)[1].rstrip("/")
    scheme = server.split("://", 1)[0]
    return f"""# MiNiFi C++ (minifi.properties): C2 against the edgefleet fleet server (docs/minifi.md)
nifi.c2.enable=true
# libcurl sends the URL's user-info as HTTP Basic: this is how the agent authenticates
nifi.c2.rest.path.base={scheme}://{device_id}:{token}@{host}/c2-protocol
nifi.c2.rest.url=/heartbeat
nifi.c2.rest.url.ack=/acknowledge
nifi.c2.agent.identifier={device_id}
nifi.c2.agent.class=edgefleet-minifi
# milliseconds between heartbeats
nifi.c2.agent.heartbeat.period=30000
# synced assets land here: <asset dir>/edgefleet/<model>/bundle.tar and <asset dir>/edgefleet/keys/*.pem
nifi.asset.directory=${{MINIFI_HOME}}/asset
nifi.python.processor.dir=${{MINIFI_HOME}}/minifi-python
# ScoreChurn properties: Model Bundle Path=${{MINIFI_HOME}}/asset/edgefleet/churn/bundle.tar
#                        Trusted Public Keys=${{MINIFI_HOME}}/asset/edgefleet/keys
"""


def _bootstrap_conf(server: str, device_id: str, token: str) -> str:
    return f"""# MiNiFi Java / NiFi (bootstrap.conf): C2 against the edgefleet fleet server (docs/minifi.md)
c2.enable=true
# the Java C2 client sends no Authorization header (OkHttp, TLS client certificates only): the token is in the path
c2.rest.path.base={server.rstrip('/')}/c2-protocol/agent/{token}
c2.rest.path.heartbeat=heartbeat
c2.rest.path.acknowledge=acknowledge
c2.agent.identifier={device_id}
c2.agent.class=edgefleet-minifi
# milliseconds between heartbeats
c2.agent.heartbeat.period=30000
"""


def package(out: Path, server: str, device_id: str, token: str) -> list[Path]:
    """Write the files listed in the module docstring; returns them."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        written: list[Path] = []

        def write(rel: str, text: str) -> None:
            p = out / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(text, encoding="utf-8")
            written.append(p)

        sources = _sources()
        for lib in ("minifi/minifi-python/edgefleet_lib", "nifi/python/edgefleet_lib"):
            if (out / lib).exists():
                shutil.rmtree(out / lib)  # a second run replaces the vendored code whole
            for f, rel in sources:
                dest = out / lib / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(f, dest)
                written.append(dest)
        write("minifi/minifi-python/nifi_python_processors/ScoreChurn.py", _shell("minifi"))
        write("nifi/python/extensions/ScoreChurn.py", _shell("nifi"))
        write("minifi/minifi.properties.c2", _minifi_properties(server, device_id, token))
        write("nifi/bootstrap.conf.c2", _bootstrap_conf(server, device_id, token))
        write("requirements.txt", _requirements())
        write("README.txt", (__doc__ or "").split("Writes, without any network access:", 1)[1].strip() + "\n")
        nar = out / f"nifi-edgefleet-nar-{VERSION}.nar"
        with zipfile.ZipFile(nar, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr("META-INF/MANIFEST.MF", f"Manifest-Version: 1.0\nNar-Group: io.edgefleet\nNar-Id: nifi-edgefleet-nar\n"
                                               f"Nar-Version: {VERSION}\n")
            z.writestr("ScoreChurn.py", _shell("nifi"))
            z.writestr("requirements.txt", _requirements())
            for f, rel in sources:
                z.write(f, f"NAR-INF/bundled-dependencies/{rel}")
        written.append(nar)
    except OSError as exc:
        raise PackageError(f"--out: cannot write {out}: {exc.strerror or exc}") from exc
    return written


def enroll(server: str, enroll_token: str, device_id: str) -> dict[str, Any]:
    """Enroll ``device_id`` as a MiNiFi agent; the credential (token, publisher keys)."""
    from edgefleet.http import HttpClient

    client = HttpClient(server, None, error=PackageError, timeout=30.0)
    cred: dict[str, Any] = client.request("POST", "/api/v1/devices/enroll",
                                          {"token": enroll_token, "device_id": device_id, "kind": "minifi"})
    return cred


def _cmd_package(args: argparse.Namespace) -> int:
    token = args.token
    keys: list[str] = []
    if args.enroll_token:
        if args.device_id == "<device_id>":
            raise PackageError("--device-id: required with --enroll-token (the id to enroll the agent as)")
        cred = enroll(args.server, args.enroll_token, args.device_id)
        token, keys = cred["token"], list(cred.get("publisher_keys") or [])
    files = package(Path(args.out), args.server, args.device_id, token)
    for i, pem in enumerate(keys):  # the processor's Trusted Public Keys until the first sync brings edgefleet/keys
        p = Path(args.out) / "keys" / f"publisher-{i}.pem"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(pem, encoding="utf-8")
        files.append(p)
    if args.enroll_token:
        print(f"enrolled {args.device_id} as a MiNiFi agent with {args.server}; its token is in the C2 settings (keep them private)")
    nar = next(f for f in files if f.suffix == ".nar")
    print(f"wrote {len(files)} files to {args.out}: ScoreChurn for MiNiFi C++ (minifi/), NiFi 2.x (nifi/, and "
          f"{nar.name}); C2 settings in minifi/minifi.properties.c2 and nifi/bootstrap.conf.c2")
    return 0


def add_parsers(sub: Any) -> None:
    m = sub.add_parser("minifi", help="MiNiFi/NiFi: package the ScoreChurn processor and the C2 settings")
    msub = m.add_subparsers(dest="minifi_command", required=True, metavar="COMMAND")
    p = msub.add_parser("package", help="write the processor files, requirements.txt, sample C2 settings and a NAR")
    p.add_argument("--out", type=cli_types.path, required=True, help="folder to write into")
    p.add_argument("--server", type=cli_types.http_url, default="http://127.0.0.1:8080",
                   help="the fleet server URL the agents use (default http://127.0.0.1:8080)")
    p.add_argument("--device-id", default="<device_id>", help="the agent's device id (enrolled with kind minifi)")
    p.add_argument("--token", default="<device_token>", help="the agent's device token (default: a placeholder to fill in)")
    p.add_argument("--enroll-token", help="a one-time enrollment token: enroll --device-id as kind minifi now and write its token in")
    p.set_defaults(func=_cmd_package)
