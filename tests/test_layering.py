"""Packages point forward only: a test that reads every import with `ast` (nothing is imported).

Layers, lowest first:

    0  edgefleet        the shared contract (bundle format, manifest schema, encoding, keys,
                        protocol, fsutil, http, errors); imports no other edgefleet package
    1  compiler         siblings: neither may import the other
    1  runtimes
    2  fleet_server
    3  edgefleet_cli    the CLI, the only code that may import everything

A module may import its own package and the contract; the CLI may import everything. The
fleet server does not import the compiler (retraining runs it as a subprocess) nor the device
runtime. Every other edge fails, except the allow-list below, each entry with its reason. The contract also imports nothing third-party
beyond numpy and cryptography (the README's claim).
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

LAYERS: dict[str, int] = {"edgefleet": 0, "compiler": 1, "runtimes": 1, "fleet_server": 2, "edgefleet_cli": 3}

# (importing module prefix, imported module prefix) -> why the edge is allowed.
ALLOWED: dict[tuple[str, str], str] = {
    ("fleet_server", "runtimes.python.scorer"): "REST predict (fleet_server/api/predict.py) scores with the device Scorer",
    ("fleet_server", "runtimes.python.errors"): "REST predict translates the device Scorer's errors (422 names the field)",
    ("compiler.retrain", "runtimes.python"): "the retraining job scores the live bundle with the device Scorer",
    ("compiler.online", "runtimes.python"): "train-online scores the serving champion with the device Scorer, as retrain does",
}

# Which packages each package may import besides itself (layer order alone would let the
# fleet server import the compiler; it must not).
MAY_IMPORT: dict[str, set[str]] = {
    "edgefleet": set(),
    "compiler": {"edgefleet"},
    "runtimes": {"edgefleet"},
    "fleet_server": {"edgefleet"},
    "edgefleet_cli": {"edgefleet", "compiler", "runtimes", "fleet_server"},
}

CONTRACT_THIRD_PARTY = {"numpy", "cryptography"}


@dataclass(frozen=True)
class Edge:
    path: Path
    line: int
    importer: str
    imported: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.importer} -> {self.imported}"


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(root: Path, path: Path) -> list[Edge]:
    """Every import in the file, at any depth, relative ones resolved to absolute names."""
    me = module_name(root, path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    rel = path.relative_to(root)
    edges: list[Edge] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            edges += [Edge(rel, node.lineno, me, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".") if package else []
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                prefix = ".".join(base)
                target = ".".join(x for x in (prefix, node.module) if x)
            else:
                target = node.module or ""
            # `from pkg import sub` may name a submodule: record pkg.sub so allow-list prefixes match.
            edges += [Edge(rel, node.lineno, me, f"{target}.{alias.name}") for alias in node.names]
    return edges


def _layer(name: str) -> str | None:
    top = name.split(".")[0]
    return top if top in LAYERS else None


def _matches(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def violations(root: Path) -> list[str]:
    """Edges that point to a higher layer or sideways and are not on the allow-list."""
    found: list[str] = []
    for top in LAYERS:
        for path in sorted((root / top).rglob("*.py")) if (root / top).is_dir() else []:
            for edge in imports_of(root, path):
                src, dst = _layer(edge.importer), _layer(edge.imported)
                if src is None or dst is None or src == dst or dst in MAY_IMPORT[src]:
                    continue
                if any(_matches(edge.importer, a) and _matches(edge.imported, b) for a, b in ALLOWED):
                    continue
                kind = {True: "sideways", False: "backwards" if LAYERS[dst] > LAYERS[src] else "not allowed"}[LAYERS[dst] == LAYERS[src]]
                found.append(f"{edge} ({kind}: {src} layer {LAYERS[src]} -> {dst} layer {LAYERS[dst]})")
    return found


def contract_third_party(root: Path) -> list[str]:
    """Imports in edgefleet/ of anything but the stdlib, numpy and cryptography (own packages: see violations)."""
    found: list[str] = []
    for path in sorted((root / "edgefleet").rglob("*.py")):
        for edge in imports_of(root, path):
            top = edge.imported.split(".")[0]
            if top in sys.stdlib_module_names or top == "__future__" or top in LAYERS or top in CONTRACT_THIRD_PARTY:
                continue
            found.append(f"{edge} (third-party in the contract)")
    return found


def test_packages_point_forward() -> None:
    bad = violations(ROOT)
    assert not bad, "imports against the layers (edgefleet <- compiler, runtimes <- fleet_server <- edgefleet_cli):\n" + "\n".join(bad)


def test_the_checker_sees_every_package() -> None:
    counted = {top: len(list((ROOT / top).rglob("*.py"))) for top in LAYERS}
    assert all(counted.values()), counted
    assert set(MAY_IMPORT) == set(LAYERS)
    # The allowed exceptions are real edges today, so the allow-list cannot rot unnoticed.
    edges = [e for top in LAYERS for p in (ROOT / top).rglob("*.py") for e in imports_of(ROOT, p)]
    for a, b in ALLOWED:
        assert any(_matches(e.importer, a) and _matches(e.imported, b) for e in edges), f"allow-list entry {a} -> {b} is unused"


def test_contract_depends_only_on_numpy_and_cryptography() -> None:
    bad = contract_third_party(ROOT)
    assert not bad, "\n".join(bad)


def _write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def test_checker_reports_backwards_sideways_and_relative_imports(tmp_path: Path) -> None:
    for top in LAYERS:
        _write(tmp_path, f"{top}/__init__.py", "")
    _write(tmp_path, "edgefleet/x.py", "import json\n\nfrom fleet_server import core\n")
    _write(tmp_path, "compiler/sub/__init__.py", "")
    _write(tmp_path, "compiler/sub/y.py", "def f():\n    import runtimes.python.agent\n    from .. import ir\n    return ir\n")
    _write(tmp_path, "runtimes/python/__init__.py", "")
    _write(tmp_path, "runtimes/python/z.py", "from edgefleet_cli.main import main\nfrom ..python import store\nfrom . import agent\n")
    _write(tmp_path, "fleet_server/api.py", "from runtimes.python.scorer import Scorer\nfrom runtimes.python.agent import Agent\n")
    _write(tmp_path, "edgefleet_cli/main.py", "import compiler, fleet_server, runtimes.python\n")
    _write(tmp_path, "fleet_server/retrain.py", "from compiler import compile\n")

    bad = violations(tmp_path)
    text = "\n".join(bad)
    assert any(line.startswith("edgefleet/x.py:3: edgefleet.x -> fleet_server.core (backwards") for line in bad), text
    assert any(line.startswith("compiler/sub/y.py:2: compiler.sub.y -> runtimes.python.agent (sideways") for line in bad), text
    assert any(line.startswith("runtimes/python/z.py:1: runtimes.python.z -> edgefleet_cli.main.main (backwards") for line in bad), text
    assert any(line.startswith("fleet_server/api.py:2: fleet_server.api -> runtimes.python.agent.Agent (not allowed") for line in bad), text
    assert any(line.startswith("fleet_server/retrain.py:1: fleet_server.retrain -> compiler.compile (not allowed") for line in bad), text
    assert len(bad) == 5, text  # the allowed scorer import, `from .. import ir` and the CLI's imports are fine

    # Relative imports resolve against the importing module's package.
    names = [e.imported for e in imports_of(tmp_path, tmp_path / "runtimes/python/z.py")]
    assert names == ["edgefleet_cli.main.main", "runtimes.python.store", "runtimes.python.agent"], names
    assert [e.imported for e in imports_of(tmp_path, tmp_path / "compiler/sub/y.py")][1] == "compiler.ir"

    _write(tmp_path, "edgefleet/y.py", "import requests\nimport numpy as np\nfrom cryptography.hazmat import x\nimport os.path\n")
    third = contract_third_party(tmp_path)
    assert third == ["edgefleet/y.py:1: edgefleet.y -> requests (third-party in the contract)"], third
