"""Compile the Kotlin SDK (runtimes/kotlin) and its tests once per source state.

    python -m tests.kotlin.build        # what `make kotlin` runs; prints the jar paths and sizes

kotlinc (npm ``kotlin-compiler``, pinned in package.json) runs on the installed JDK. One
invocation compiles the library and its tests (the JVM start-up dominates: about 6 s for hello
world), into ``build/kotlin/<hash>/``, keyed by a hash of every source, the manifest schema and
the compiler version, so a second run, or a second test in the session, reuses it. The library
jar (``edgefleet-kotlin.jar``: the ``edgefleet`` package and the manifest schema, no Kotlin
runtime) is what an Android app includes; the tests go into their own jar.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[2]
KOTLIN = ROOT / "runtimes" / "kotlin"
KOTLINC = ROOT / "node_modules" / "kotlin-compiler" / "bin" / "kotlinc"
KOTLIN_LIB = ROOT / "node_modules" / "kotlin-compiler" / "lib"
SCHEMA = ROOT / "edgefleet" / "schema" / "manifest.schema.json"
BUILD = ROOT / "build" / "kotlin"


def sources() -> list[Path]:
    return sorted(p for p in (KOTLIN / "src").rglob("*.kt")) + sorted(p for p in (KOTLIN / "test").rglob("*.kt"))


def source_hash() -> str:
    h = hashlib.sha256()
    for p in [*sources(), SCHEMA, KOTLIN_LIB.parent / "build.txt"]:
        h.update(str(p.relative_to(ROOT)).encode() + b"\0")
        h.update(p.read_bytes() if p.exists() else b"<missing>")
    return h.hexdigest()[:16]


def _jar(out: Path, classes: Path, keep: Callable[[str], bool], extra: dict[str, Path] | None = None) -> None:
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\nCreated-By: edgefleet tests/kotlin/build.py\n\n")
        for p in sorted(classes.rglob("*")):
            rel = p.relative_to(classes).as_posix()
            if p.is_file() and not rel.startswith("META-INF/") and keep(rel):
                z.write(p, rel)
        for name, path in (extra or {}).items():
            z.write(path, name)


def build() -> dict[str, str]:
    """The jars for the current sources, compiled now if no build of this hash exists."""
    if not KOTLINC.exists():
        raise RuntimeError(f"{KOTLINC} is missing: run `make install` (npm ci installs kotlin-compiler)")
    key = source_hash()
    out = BUILD / key
    done = out / "build.json"
    BUILD.mkdir(parents=True, exist_ok=True)
    with open(BUILD / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if done.exists():
            return dict(json.loads(done.read_text()))
        shutil.rmtree(out, ignore_errors=True)
        classes = out / "classes"
        classes.mkdir(parents=True)
        cmd = [str(KOTLINC), "-nowarn", "-jvm-target", "17", "-d", str(classes), str(KOTLIN / "src"), str(KOTLIN / "test")]
        env = dict(os.environ, JAVA_OPTS="-Xss8m -XX:+UseSerialGC -XX:TieredStopAtLevel=1")
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            raise RuntimeError(f"kotlinc failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        lib, tests = out / "edgefleet-kotlin.jar", out / "edgefleet-kotlin-tests.jar"
        _jar(lib, classes, lambda rel: not rel.startswith("edgefleet/test/"), {"edgefleet/manifest.schema.json": SCHEMA})
        _jar(tests, classes, lambda rel: rel.startswith("edgefleet/test/"))
        info = {"hash": key, "jar": str(lib), "tests_jar": str(tests), "stdlib": str(KOTLIN_LIB / "kotlin-stdlib.jar"),
                "jar_bytes": str(lib.stat().st_size)}
        shutil.rmtree(classes)
        done.write_text(json.dumps(info))
        for old in BUILD.iterdir():  # keep only the current build
            if old.is_dir() and old.name != key:
                shutil.rmtree(old, ignore_errors=True)
        return info


def classpath(info: dict[str, str]) -> str:
    return os.pathsep.join([info["jar"], info["tests_jar"], info["stdlib"]])


def main() -> int:
    info = build()
    print(f"{info['jar']} ({int(info['jar_bytes']):,} bytes; needs kotlin-stdlib.jar)")
    print(info["tests_jar"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
