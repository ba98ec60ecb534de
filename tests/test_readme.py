"""The README's command blocks, run exactly as printed, in order, from a fresh temporary working directory.

Every fenced ``sh`` block is run with ``bash -euo pipefail`` in one working directory that starts
empty, with ``edgefleet`` and ``python`` from this venv on PATH, an empty HOME (no config file) and no
``EDGEFLEET_*`` variables; ``python`` blocks run with the venv's interpreter in the same folder. A
block's ``&`` commands (the server, the agent) keep running for the later blocks and are stopped at
the end. Two kinds of block are install instructions rather than commands to run inside a test, and
are checked instead of run: ``make ...`` lines (each target must exist: ``make -n`` succeeds; CI runs
``make test`` itself, and ``make demo`` runs ``edgefleet quickstart --once``) and ``pip install``
lines (every extra they name must exist in pyproject.toml; tests/packaging installs the wheel).

The commands use the defaults (port 8080, MQTT 1883, ./fleet-data), because that is what the README
promises: the test fails, naming the port, if something else already listens there.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BLOCK = re.compile(r"^```(sh|python)\n(.*?)^```", re.S | re.M)


def blocks() -> list[tuple[str, str, int]]:
    text = README.read_text(encoding="utf-8")
    return [(m.group(1), m.group(2), text[: m.start()].count("\n") + 1) for m in BLOCK.finditer(text)]


def _commands(body: str) -> list[str]:
    joined = re.sub(r"\\\n\s*", " ", body)
    out = []
    for line in joined.splitlines():
        code = line.split("#", 1)[0].strip() if not line.lstrip().startswith("#") else ""
        if code:
            out.append(code)
    return out


def _kind(lang: str, body: str) -> str:
    cmds = _commands(body)
    if lang == "sh" and cmds and all(c.startswith("make ") for c in cmds):
        return "make"
    if lang == "sh" and cmds and all(c.startswith("pip install ") for c in cmds):
        return "pip"
    return lang


def test_readme_blocks_are_classified() -> None:
    """No block mixes install lines with commands, and there is something to run."""
    kinds = [_kind(lang, body) for lang, body, _ in blocks()]
    assert kinds.count("sh") >= 4, kinds
    for lang, body, line in blocks():
        cmds = _commands(body)
        if _kind(lang, body) == "sh":
            assert not any(c.startswith(("make ", "pip install ")) for c in cmds), f"README.md:{line}: install lines mixed with commands"


def test_readme_make_and_pip_lines_name_real_targets_and_extras() -> None:
    extras = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    for lang, body, line in blocks():
        kind = _kind(lang, body)
        for cmd in _commands(body):
            if kind == "make":
                target = cmd.split()[1]
                proc = subprocess.run(["make", "-n", target], cwd=ROOT, capture_output=True, text=True)
                assert proc.returncode == 0, f"README.md:{line}: `{cmd}`: {proc.stderr}"
            elif kind == "pip":
                for group in re.findall(r"\[([a-z,]+)\]", cmd):
                    for extra in group.split(","):
                        assert extra in extras, f"README.md:{line}: `{cmd}` names extra [{extra}], which pyproject.toml does not define"


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.mark.timeout(900)
def test_readme_commands_run_as_printed_from_a_fresh_directory(tmp_path: Path) -> None:
    for port in (8080, 1883):
        assert _port_free(port), f"127.0.0.1:{port} is in use; the README's commands use the default ports"
    work = tmp_path / "work"
    home = tmp_path / "home"
    work.mkdir()
    home.mkdir()
    venv_bin = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEFLEET_")}
    env.update(PATH=f"{venv_bin}{os.pathsep}{env.get('PATH', '')}", HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"),
               PYTHONUNBUFFERED="1")
    env.pop("PYTHONPATH", None)  # the commands must work from an installed edgefleet, not from this checkout's folder
    sessions: list[subprocess.Popen[str]] = []
    log: list[str] = []
    try:
        for lang, body, line in blocks():
            kind = _kind(lang, body)
            if kind not in ("sh", "python"):
                continue
            argv = ["bash", "-euo", "pipefail", "-c", body] if kind == "sh" else [sys.executable, "-c", body]
            t0 = time.monotonic()
            # A new session per block, so its background jobs (server, agent) can be stopped as a group at the end;
            # their output goes to files the block names, so the pipe below closes when the block is done.
            proc = subprocess.Popen(argv, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                    start_new_session=True)
            sessions.append(proc)
            out, _ = proc.communicate(timeout=600)
            log.append(f"--- README.md:{line} ({kind}, exit {proc.returncode}, {time.monotonic() - t0:.1f}s)\n{out}")
            print(log[-1].splitlines()[0])
            assert proc.returncode == 0, "\n".join(log[-3:]) + _logs(work)
            assert "Traceback" not in out, log[-1]
        text = "\n".join(log)
        # What the blocks must have done, checked on their effects rather than on their words alone.
        assert (work / "fleet-data" / "secrets" / "admin-token").is_file(), "the server did not use ./fleet-data under the caller's cwd"
        assert list((work / "fleet-data" / "artifacts").glob("*.tar")), "no artifact stored under ./fleet-data/artifacts"
        scored = work / "scores.csv"
        assert scored.is_file() and scored.read_text().splitlines()[0].startswith("customerID"), "score did not carry the id column"
        assert re.search(r"installed", text), text[-3000:]
    finally:
        for proc in sessions:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (_port_free(8080) and _port_free(1883)):
            time.sleep(0.2)
        for proc in sessions:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(home, ignore_errors=True)


def _logs(work: Path) -> str:
    parts = []
    for name in ("server.log", "agent.log"):
        p = work / name
        if p.is_file():
            parts.append(f"\n--- {name} (last 40 lines)\n" + "\n".join(p.read_text(errors="replace").splitlines()[-40:]))
    return "".join(parts)
