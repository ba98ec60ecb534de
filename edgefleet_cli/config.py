"""Settings the fleet verbs share: flag > environment > config file > default.

Config files (TOML, read with :mod:`tomllib`), the first one found per key wins:

1. ``edgefleet.toml`` in the working directory (a project's own settings);
2. ``$XDG_CONFIG_HOME/edgefleet/config.toml`` (default ``~/.config/edgefleet/config.toml``).

Keys (all optional, all strings)::

    server = "http://127.0.0.1:8080"        # EDGEFLEET_SERVER
    admin_token = "adm_..."                 # EDGEFLEET_ADMIN_TOKEN
    token_file = "fleet-data/secrets/admin-token"
    pubkey = "keys/public.pem"              # `verify` and `score` without --pubkey

A relative path in a config file is relative to that file's folder. A file that is not valid TOML,
an unknown key or a value of the wrong type is one line naming the file, the line and the reason.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from edgefleet.errors import EdgefleetError

DEFAULT_SERVER = "http://127.0.0.1:8080"
DEFAULT_TOKEN_FILE = "fleet-data/secrets/admin-token"
ENV = {"server": "EDGEFLEET_SERVER", "admin_token": "EDGEFLEET_ADMIN_TOKEN"}
KEYS = ("server", "admin_token", "token_file", "pubkey")
PATH_KEYS = ("token_file", "pubkey")


class ConfigFileError(EdgefleetError):
    """A config file that cannot be used: its message names the file, the line (when known) and the reason."""


@dataclass(frozen=True)
class FileConfig:
    values: dict[str, str] = field(default_factory=dict)
    sources: dict[str, Path] = field(default_factory=dict)  # key -> the file it came from

    def get(self, key: str) -> str | None:
        return self.values.get(key)


def config_paths(cwd: Path | None = None, env: Mapping[str, str] | None = None) -> list[Path]:
    env = os.environ if env is None else env
    base = Path(env["XDG_CONFIG_HOME"]) if env.get("XDG_CONFIG_HOME") else Path(env.get("HOME") or Path.home()) / ".config"
    return [(cwd or Path.cwd()) / "edgefleet.toml", base / "edgefleet" / "config.toml"]


def _line_of(text: str, key: str) -> int | None:
    m = re.search(rf"^[ \t]*{re.escape(key)}[ \t]*=", text, re.MULTILINE)
    return text.count("\n", 0, m.start()) + 1 if m else None


def read_file(path: Path) -> dict[str, str]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigFileError(f"config file {path}: cannot read it: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
        data = tomllib.loads(text)
    except UnicodeDecodeError as exc:
        raise ConfigFileError(f"config file {path}: not UTF-8 text (byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        m = re.search(r"\(at line (\d+), column (\d+)\)", msg) or re.search(r"\(at end of document\)", msg)
        reason = re.sub(r"\s*\(at (line \d+, column \d+|end of document)\)", "", msg)
        where = f"line {m.group(1)}, column {m.group(2)}" if m and m.groups() else "end of file"
        raise ConfigFileError(f"config file {path}, {where}: not valid TOML: {reason}") from None
    out: dict[str, str] = {}
    for key, value in data.items():
        line = _line_of(text, key)
        at = f"config file {path}" + (f", line {line}" if line else "")
        if key not in KEYS:
            raise ConfigFileError(f"{at}: unknown key {key!r} (known: {', '.join(KEYS)})")
        if not isinstance(value, str) or not value.strip():
            raise ConfigFileError(f"{at}: {key} must be a non-empty string, got {type(value).__name__} {value!r}")
        if key == "server":
            from argparse import ArgumentTypeError

            from edgefleet_cli.args import http_url

            try:
                http_url(value)
            except ArgumentTypeError as exc:
                raise ConfigFileError(f"{at}: server: {exc}") from None
        if key in PATH_KEYS:
            value = str((path.parent / Path(value).expanduser()).resolve())
        out[key] = value
    return out


def load(paths: list[Path] | None = None) -> FileConfig:
    values: dict[str, str] = {}
    sources: dict[str, Path] = {}
    for p in paths if paths is not None else config_paths():
        if not p.is_file():
            continue
        for k, v in read_file(p).items():
            if k not in values:
                values[k], sources[k] = v, p
    return FileConfig(values, sources)


def server(flag: str | None, cfg: FileConfig) -> str:
    return flag or os.environ.get(ENV["server"]) or cfg.get("server") or DEFAULT_SERVER


def admin_token(token_file_flag: str | None, cfg: FileConfig) -> tuple[str | None, str]:
    """(the token itself if known without a file, else None; the token file to read and name in errors)."""
    if token_file_flag:
        return None, token_file_flag
    token = os.environ.get(ENV["admin_token"]) or cfg.get("admin_token")
    return token, cfg.get("token_file") or str(Path(DEFAULT_TOKEN_FILE).resolve())


def apply(args: Any, keys: tuple[str, ...] = ("server", "token_file", "pubkey")) -> None:
    """Fill the unset options ``keys`` of a parsed command line in place (the verb names the ones it takes)."""
    wanted = [k for k in keys if hasattr(args, k) and getattr(args, k) is None]
    if not wanted:
        if "token_file" in keys and hasattr(args, "token_file"):
            args.admin_token = None  # --token-file given: it wins over the environment and the config file
        return
    cfg = load()
    if "server" in wanted:
        args.server = server(None, cfg)
    if "token_file" in wanted:
        args.admin_token, args.token_file = admin_token(None, cfg)
    elif hasattr(args, "token_file"):
        args.admin_token = None
    if "pubkey" in wanted and cfg.get("pubkey"):
        args.pubkey = cfg.get("pubkey")
