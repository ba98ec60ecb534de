"""Bundles suite (issue 10, item 7): every crafted bundle is refused everywhere, in one line, in bounded memory.

Each crafted bundle is correctly signed with the test key wherever a signature is involved, so
only its content is wrong. Each must be refused, with a one-line reason that names the problem,
by all four readers of bundles:

- ``edgefleet verify`` and ``edgefleet score`` (real CLI subprocesses: exit 1, one line, no
  traceback; max RSS of the verify process measured with ``os.wait4``),
- the fleet server's publish (``POST /api/v1/models`` on a real server: 400 with ``error``,
  nothing registered, RSS growth measured),
- the device's model store (``ModelStore.install``: ``InstallError``, the old model still active).
"""

from __future__ import annotations

import base64
import io
import json
import os
import resource
import shutil
import subprocess
import sys
import tarfile
import tracemalloc
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import jsonschema
import pytest

from edgefleet import keys
from edgefleet.bundle_format import MAX_TOTAL_BYTES, canonical_json, open_bundle, verify
from edgefleet.errors import BundleError
from edgefleet.manifest_schema import SCHEMA_PATH, ManifestError, check_manifest
from runtimes.python.errors import InstallError
from runtimes.python.store import ModelStore
from tests.fleet_server.conftest import Api, make_server  # noqa: F401 - the real-server fixture
from tests.runtimes.conftest import lr_result  # noqa: F401 - session-scoped compiled bundle

MEMORY_LIMIT_KB = 200 * 1024
SPARSE_MEMBER = 500 * 1024**2  # under MAX_MEMBER_BYTES: only a total cap or the sparse check stops it
SPARSE_BYTES = 7 * SPARSE_MEMBER  # what the sparse bomb expands to; its archive is a few KiB


# -- building crafted bundles -------------------------------------------------------------------

def _sign(manifest_bytes: bytes, private_key: Any) -> bytes:
    return base64.b64encode(keys.sign(private_key, manifest_bytes)) + b"\n"


def _good_files(lr: Any, private_key: Any, version: int = 2, edit: Callable[[dict[str, Any]], Any] | None = None,
                raw: bytes | None = None) -> dict[str, bytes]:
    """A bundle's files, signed with the test key; ``edit`` changes the manifest first (unchecked)."""
    manifest = json.loads(canonical_json(lr.manifest))
    manifest["version"] = version
    if edit:
        edit(manifest)
    body = raw if raw is not None else canonical_json(manifest)
    files = {"manifest.json": body, "signature": _sign(body, private_key)}
    files.update({k: v for k, v in lr.files.items() if k.startswith("artifacts/")})
    return files


def _tar(path: Path, entries: list[tuple[str, str, bytes | str]]) -> Path:
    """A tar of (kind, name, data-or-linkname) in order, duplicates and odd kinds allowed."""
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        for kind, name, data in entries:
            info = tarfile.TarInfo(name)
            info.mode = 0o644
            if kind == "file":
                assert isinstance(data, bytes)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
                continue
            info.type = {"dir": tarfile.DIRTYPE, "sym": tarfile.SYMTYPE, "hard": tarfile.LNKTYPE,
                         "fifo": tarfile.FIFOTYPE, "chr": tarfile.CHRTYPE}[kind]
            if kind in ("sym", "hard"):
                info.linkname = str(data)
            tar.addfile(info)
    return path


def _files_entries(files: dict[str, bytes]) -> list[tuple[str, str, bytes | str]]:
    return [("file", n, d) for n, d in sorted(files.items())]


def _sparse_bomb(tmp: Path, files: dict[str, bytes], fmt: str) -> Path:
    """A GNU tar ``--sparse`` archive of a few KiB that expands to SPARSE_BYTES.

    Every member stays under the per-member cap (as in the issue's reproduction): the listed
    artifact and six unlisted blobs of SPARSE_MEMBER bytes each.
    """
    src = tmp / f"sparse-src-{fmt}"
    (src / "artifacts").mkdir(parents=True)
    (src / "payload").mkdir()
    (src / "manifest.json").write_bytes(files["manifest.json"])
    (src / "signature").write_bytes(files["signature"])
    names = ["artifacts/model.onnx"] + [f"payload/blob-{i}" for i in range(SPARSE_BYTES // SPARSE_MEMBER - 1)]
    for name in names:
        with open(src / name, "wb") as fh:
            fh.write(files["artifacts/model.onnx"][:4096])
            fh.truncate(SPARSE_MEMBER)
    out = tmp / f"sparse-bomb-{fmt}.tar"
    subprocess.run(["tar", "--sparse", f"--format={fmt}", "-cf", str(out), "-C", str(src), "manifest.json", "signature", *names],
                   check=True, timeout=120)
    shutil.rmtree(src)
    assert out.stat().st_size < 1024 * 1024, "the bomb must be small on disk"
    return out


def _deep(files: dict[str, bytes], private_key: Any, depth: int = 100_000) -> dict[str, bytes]:
    m = json.loads(files["manifest.json"])
    m["canary"]["rows"][0]["input"] = {"deep": "__DEEP__"}
    body = canonical_json(m).replace(b'"__DEEP__"', b"[" * depth + b"]" * depth)
    return {**files, "manifest.json": body, "signature": _sign(body, private_key)}


def _edit(fn: Callable[[dict[str, Any]], Any]) -> Callable[[dict[str, Any]], None]:
    return lambda m: (fn(m), None)[1]


MALFORMED: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    # case id: (edit of the signed manifest, what the one-line reason must name)
    "missing-name": (lambda m: m.pop("name"), "malformed manifest: name: is required"),
    "missing-version": (lambda m: m.pop("version"), "malformed manifest: version: is required"),
    "missing-artifact-format": (lambda m: m["artifacts"][0].pop("format"), "artifacts[0].format: is required"),
    "artifacts-a-string": (_edit(lambda m: m.update(artifacts="artifacts/model.onnx")), "malformed manifest: artifacts"),
    "artifacts-empty": (_edit(lambda m: m.update(artifacts=[])), "artifacts"),  # (model.onnx is then unlisted)
    "version-negative": (_edit(lambda m: m.update(version=-5)), "version: must be >= 1"),
    "version-zero": (_edit(lambda m: m.update(version=0)), "version: must be >= 1"),
    "version-float": (_edit(lambda m: m.update(version=7.9)), "version: must be integer"),
    "version-true": (_edit(lambda m: m.update(version=True)), "version: must be integer, got a boolean"),
    "version-string": (_edit(lambda m: m.update(version="2")), "version: must be integer"),
    "version-2**53": (_edit(lambda m: m.update(version=2**53)), "version: must be <= 2147483647"),
    "version-2**31": (_edit(lambda m: m.update(version=2**31)), "version: must be <= 2147483647"),
    "name-traversal": (_edit(lambda m: m.update(name="../../../../tmp/x")), "name: \"../../../../tmp/x\" does not match"),
    "name-uppercase": (_edit(lambda m: m.update(name="Churn")), "name: \"Churn\" does not match"),
    "name-newline": (_edit(lambda m: m.update(name="churn\n")), "does not match"),
    "name-too-long": (_edit(lambda m: m.update(name="c" * 65)), "does not match"),
    "name-number": (_edit(lambda m: m.update(name=5)), "name: must be string"),
    "artifact-path-traversal": (lambda m: m["artifacts"][0].update(path="artifacts/../evil"), "artifacts[0].path: must be artifacts/<name>"),
    "artifact-path-subfolder": (lambda m: m["artifacts"][0].update(path="artifacts/x/model.onnx"), "artifacts[0].path: must be artifacts/<name>"),
    "artifact-size-string": (lambda m: m["artifacts"][0].update(size="123"), "artifacts[0].size: must be integer"),
    "artifact-listed-twice": (lambda m: m["artifacts"].append(dict(m["artifacts"][0])), "artifacts[1].path"),
    "fields-an-object": (lambda m: m["input_schema"].update(fields={"a": 1}), "input_schema.fields: must be array"),
    "field-type-unknown": (lambda m: m["input_schema"]["fields"][0].update(type="matrix"), "input_schema.fields[0].type"),
    "classes-a-string": (lambda m: m["output"].update(classes="01"), "output.classes: must be array"),
    "threshold-out-of-range": (lambda m: m["output"].update(threshold=7), "output.threshold: must be < 1"),
    "unknown-top-field": (_edit(lambda m: m.update(evil=1)), "evil: is not a known field"),
    "format-version-2": (_edit(lambda m: m.update(format_version=2)), "unsupported bundle format"),
    # beyond the schema (edgefleet.manifest_schema.check_manifest)
    "field-listed-twice": (lambda m: m["input_schema"]["fields"].append(dict(m["input_schema"]["fields"][0])), "input_schema.fields[16].name: 'gender' is listed twice"),
    "classes-three-for-binary": (lambda m: m["output"].update(classes=[0, 1, 2]), "canary.rows[0].probabilities: has 2 values for 3 classes"),
    "positive-class-unknown": (lambda m: m["output"].update(positive_class="yes"), "output.positive_class"),
}
SCHEMA_BEYOND = {"artifact-listed-twice", "name-newline", "field-listed-twice", "classes-three-for-binary", "positive-class-unknown"}


@pytest.fixture(scope="module")
def crafted(lr_result: Any, keypair: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str]]:  # noqa: F811
    """case id -> (crafted bundle path, the fragment its refusal must contain)."""
    tmp = tmp_path_factory.mktemp("crafted")
    key = keypair["private"]
    good = _good_files(lr_result, key)
    onnx = good["artifacts/model.onnx"]
    out: dict[str, tuple[Path, str]] = {}

    def add(case: str, entries: list[tuple[str, str, bytes | str]], expect: str) -> None:
        out[case] = (_tar(tmp / f"{case}.tar", entries), expect)

    out["sparse-bomb-gnu"] = (_sparse_bomb(tmp, good, "gnu"), "sparse member")
    out["sparse-bomb-pax"] = (_sparse_bomb(tmp, good, "posix"), "sparse member")
    base = _files_entries(good)
    add("unsigned-evil-sh", base + [("file", "evil.sh", b"#!/bin/sh\nrm -rf ~\n")], "not listed in the signed manifest: evil.sh")
    add("unsigned-payload-dir", base + [("dir", "payload", b""), ("file", "payload/run.bin", b"\x7fELF")], "payload")
    add("unsigned-capital-artifacts", base + [("file", "Artifacts/model.onnx", onnx)], "'Artifacts/model.onnx' appears twice")
    add("unsigned-capital-artifacts-new", base + [("file", "Artifacts/run.sh", b"x")], "not listed in the signed manifest: Artifacts/run.sh")
    add("unsigned-extra-artifact", base + [("file", "artifacts/extra.onnx", onnx)], "not listed in the signed manifest: artifacts/extra.onnx")
    add("stray-folder", [("dir", "payload", b"")] + base, "folder 'payload' holds no file")
    evil = _good_files(lr_result, key, edit=lambda m: m.update(name="evil"))
    add("duplicate-manifest", base + [("file", "manifest.json", evil["manifest.json"])], "'manifest.json' appears twice")
    add("duplicate-dot-slash", base + [("file", "./signature", evil["signature"])], "appears twice")
    add("duplicate-model", base + [("file", "artifacts/model.onnx", onnx[:-1] + b"\x00")], "'artifacts/model.onnx' appears twice")
    add("duplicate-case", base + [("file", "Manifest.JSON", evil["manifest.json"])], "appears twice")
    add("symlink", base + [("sym", "artifacts/link", "/etc/passwd")], "only files")
    add("hardlink", base + [("hard", "artifacts/hard", "manifest.json")], "only files")
    add("fifo", base + [("fifo", "artifacts/fifo", b"")], "only files")
    add("char-device", base + [("chr", "artifacts/dev", b"")], "only files")
    add("absolute-path", base + [("file", "/tmp/edgefleet-abs", b"x")], "unsafe path")
    add("path-traversal", base + [("file", "../../escaped.txt", b"x")], "unsafe path")
    add("deep-manifest", _files_entries(_deep(good, key)), "nested too deeply")
    listed = b"[1,2,3]"
    add("manifest-a-list", _files_entries({**good, "manifest.json": listed, "signature": _sign(listed, key)}), "must hold a JSON object")
    for case, (edit, expect) in MALFORMED.items():
        add(f"signed-{case}", _files_entries(_good_files(lr_result, key, edit=edit)), expect)
    return out


@pytest.fixture(scope="module")
def good_bundle(lr_result: Any, keypair: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: F811
    return _tar(tmp_path_factory.mktemp("good") / "good.tar", _files_entries(_good_files(lr_result, keypair["private"])))


# -- running the CLI with its own max RSS --------------------------------------------------------

# The CLI runs under a small launcher that forks and waits for it: a child spawned straight from
# this (large) pytest process would inherit its RSS high-water mark and measure nothing useful.
_LAUNCHER = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.executable, [sys.executable, "-m", "edgefleet_cli.main", *sys.argv[2:]])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as fh:
    fh.write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))
"""


def _cli(args: list[str], tmp: Path, timeout: float = 120.0) -> tuple[int, str, str, int]:
    """Run ``edgefleet ARGS``; return (exit code, stdout, stderr, max RSS in KiB of that process)."""
    rss = tmp / f"rss-{uuid.uuid4().hex}"
    proc = subprocess.run([sys.executable, "-c", _LAUNCHER, str(rss), *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    return proc.returncode, proc.stdout, proc.stderr, int(rss.read_text())


def _one_line_refusal(text: str, expect: str, what: str) -> None:
    lines = text.strip().splitlines()
    assert len(lines) == 1, f"{what}: expected one line, got: {text!r}"
    assert "Traceback" not in text, f"{what}: {text}"
    assert expect in lines[0], f"{what}: {expect!r} not in {lines[0]!r}"


# -- the suite --------------------------------------------------------------------------------

def test_good_bundle_passes_every_reader(good_bundle: Path, keypair: dict[str, Any], tmp_path: Path, make_server: Any) -> None:  # noqa: F811
    """The control: the same bytes, uncrafted, pass all four, also as a `tar -C dir .` with folder entries."""
    rc, out, err, _ = _cli(["verify", str(good_bundle), "--pubkey", str(keypair["public_path"])], tmp_path)
    assert rc == 0 and out.startswith("OK: churn v2"), err
    folder = tmp_path / "folder"
    folder.mkdir()
    with tarfile.open(good_bundle) as tar:
        tar.extractall(folder, filter="data")
    gnu = tmp_path / "gnu.tar"
    subprocess.run(["tar", "-cf", str(gnu), "-C", str(folder), "."], check=True, timeout=60)
    assert any(m.isdir() for m in tarfile.open(gnu).getmembers())
    for path in (folder, gnu):
        assert verify(open_bundle(path), keypair["public"])["version"] == 2
    assert ModelStore(tmp_path / "device", keypair["public"]).install(good_bundle).version == 2
    code, body, _ = Api(make_server())("POST", "/api/v1/models", raw=good_bundle.read_bytes())
    assert code == 201, body


# one of each kind for the CLI in the default run (each CLI start costs ~0.5 s); all of them under `slow`
CLI_CASES = ["sparse-bomb-gnu", "sparse-bomb-pax", "unsigned-evil-sh", "unsigned-payload-dir", "unsigned-capital-artifacts-new",
             "duplicate-manifest", "duplicate-model", "stray-folder", "hardlink", "deep-manifest", "manifest-a-list",
             "signed-missing-name", "signed-missing-version", "signed-missing-artifact-format", "signed-artifacts-a-string",
             "signed-version-float", "signed-version-true", "signed-version-negative", "signed-name-traversal"]


def test_verify_refuses_every_crafted_bundle_in_one_line(crafted: dict[str, tuple[Path, str]], keypair: dict[str, Any]) -> None:
    for case, (path, expect) in sorted(crafted.items()):
        with pytest.raises(BundleError) as info:
            verify(open_bundle(path), keypair["public"])
        _one_line_refusal(str(info.value), expect, case)


def test_verify_cli_refuses_crafted_bundles_in_one_line_and_bounded_memory(crafted: dict[str, tuple[Path, str]], keypair: dict[str, Any], tmp_path: Path) -> None:
    _verify_cli(crafted, CLI_CASES, keypair, tmp_path)


@pytest.mark.slow
def test_verify_cli_refuses_every_crafted_bundle(crafted: dict[str, tuple[Path, str]], keypair: dict[str, Any], tmp_path: Path) -> None:
    _verify_cli(crafted, sorted(crafted), keypair, tmp_path)


def _verify_cli(crafted: dict[str, tuple[Path, str]], cases: list[str], keypair: dict[str, Any], tmp_path: Path) -> None:
    def run(case: str) -> tuple[str, tuple[int, str, str, int]]:
        return case, _cli(["verify", str(crafted[case][0]), "--pubkey", str(keypair["public_path"])], tmp_path)

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = dict(pool.map(run, cases))
    for case, (rc, out, err, rss_kb) in results.items():
        assert rc == 1, f"{case}: exit {rc}, stdout {out!r}, stderr {err!r}"
        assert out == "", f"{case}: {out}"
        _one_line_refusal(err, crafted[case][1], case)
        assert err.startswith("edgefleet: error: "), err
        assert rss_kb < MEMORY_LIMIT_KB, f"{case}: verify peaked at {rss_kb / 1024:.0f} MiB"
    bombs = {c: results[c][3] // 1024 for c in results if c.startswith("sparse")}
    print(f"\nverify max RSS on the sparse bombs (MiB, each expanding to {SPARSE_BYTES / 2**30:.1f} GiB): {bombs}; "
          f"largest of {len(results)} cases {max(r[3] for r in results.values()) // 1024} MiB")


SCORE_CASES = ["sparse-bomb-gnu", "unsigned-evil-sh", "duplicate-model", "signed-missing-name", "signed-missing-artifact-format",
               "signed-artifacts-a-string", "signed-version-float", "signed-name-traversal"]


def test_score_cli_refuses_crafted_bundles(crafted: dict[str, tuple[Path, str]], keypair: dict[str, Any], lr_result: Any, tmp_path: Path) -> None:  # noqa: F811
    records = tmp_path / "records.jsonl"
    records.write_text(json.dumps(lr_result.manifest["canary"]["rows"][0]["input"]) + "\n")

    def run(case: str) -> tuple[str, tuple[int, str, str, int]]:
        return case, _cli(["score", str(crafted[case][0]), "--pubkey", str(keypair["public_path"]), "--input", str(records)], tmp_path)

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = dict(pool.map(run, SCORE_CASES))
    for case, (rc, out, err, rss_kb) in results.items():
        assert rc == 1 and out == "", f"{case}: exit {rc}, stdout {out!r}"
        _one_line_refusal(err, crafted[case][1], case)
        assert rss_kb < 2 * MEMORY_LIMIT_KB, f"{case}: score peaked at {rss_kb / 1024:.0f} MiB"  # numpy + onnxruntime imported


def test_model_store_refuses_every_crafted_bundle(crafted: dict[str, tuple[Path, str]], keypair: dict[str, Any], good_bundle: Path, lr_result: Any, tmp_path: Path) -> None:  # noqa: F811
    store = ModelStore(tmp_path / "device", keypair["public"])
    v1 = _tar(tmp_path / "v1.tar", _files_entries(_good_files(lr_result, keypair["private"], version=1)))
    store.install(v1)
    for case, (path, expect) in sorted(crafted.items()):
        with pytest.raises(InstallError) as info:
            store.install(path)
        _one_line_refusal(str(info.value), expect, case)
    reopened = ModelStore(store.root, keypair["public"]).load_active()
    assert reopened is not None and reopened.version == 1
    assert sorted(p.name for p in (store.root / "slots").iterdir()) == [store.state()["active"]]


def test_publish_refuses_every_crafted_bundle_in_bounded_memory(crafted: dict[str, tuple[Path, str]], make_server: Any, lr_result: Any, keypair: dict[str, Any], tmp_path: Path) -> None:  # noqa: F811
    server = make_server()
    api = Api(server)
    v1 = _tar(tmp_path / "v1.tar", _files_entries(_good_files(lr_result, keypair["private"], version=1)))
    assert api("POST", "/api/v1/models", raw=v1.read_bytes())[0] == 201
    stored = sorted(p.name for p in server.fleet.artifacts_dir.iterdir())
    # two measures: the process RSS high-water mark (which an earlier, larger peak of this pytest
    # process could hide) and tracemalloc's peak of Python allocations in every thread, server included
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    for case, (path, expect) in sorted(crafted.items()):
        code, body, _ = api("POST", "/api/v1/models", raw=path.read_bytes())
        assert code == 400, f"{case}: {code} {body!r}"
        assert isinstance(body, dict) and isinstance(body.get("error"), str), f"{case}: {body!r}"
        _one_line_refusal(body["error"], expect, case)
        assert body["error"].startswith("bundle: upload: ") or body["error"].startswith("bundle: signed by key"), body["error"]
    traced_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    growth_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    print(f"\nserver over {len(crafted)} crafted uploads: max RSS growth {growth_kb / 1024:.1f} MiB, "
          f"peak traced Python allocations {traced_peak / 2**20:.1f} MiB")
    assert growth_kb < MEMORY_LIMIT_KB
    assert traced_peak < MEMORY_LIMIT_KB * 1024
    code, body, _ = api("GET", "/api/v1/models")
    assert [(m["name"], m["latest"]) for m in body["models"]] == [("churn", 1)]
    assert sorted(p.name for p in server.fleet.artifacts_dir.iterdir()) == stored  # nothing of the crafted ones was kept


# -- in-process details ---------------------------------------------------------------------------

def test_folder_bundles_refuse_unlisted_files_and_special_files(lr_result: Any, keypair: dict[str, Any], tmp_path: Path) -> None:  # noqa: F811
    files = _good_files(lr_result, keypair["private"])

    def folder(name: str) -> Path:
        root = tmp_path / name
        for n, d in files.items():
            (root / n).parent.mkdir(parents=True, exist_ok=True)
            (root / n).write_bytes(d)
        return root

    assert verify(open_bundle(folder("ok")), keypair["public"])["version"] == 2
    evil = folder("evil")
    (evil / "evil.sh").write_text("#!/bin/sh\n")
    with pytest.raises(BundleError, match="not listed in the signed manifest: evil.sh"):
        open_bundle(evil)
    fifo = folder("fifo")
    os.mkfifo(fifo / "artifacts" / "pipe")
    with pytest.raises(BundleError, match=r"only files and folders \(artifacts/pipe"):
        open_bundle(fifo)
    hard = folder("hard")
    os.link(hard / "manifest.json", tmp_path / "outside.json")
    with pytest.raises(BundleError, match=r"manifest.json is a hard link"):
        open_bundle(hard)
    empty_dir = folder("emptydir")
    (empty_dir / "payload").mkdir()
    with pytest.raises(BundleError, match="folder 'payload' holds no file"):
        open_bundle(empty_dir)


def test_total_size_cap_is_checked_from_headers_before_reading(good_bundle: Path) -> None:
    size = sum(len(d) for d in open_bundle(good_bundle).files.values())
    assert open_bundle(good_bundle, max_total_bytes=size).files
    with pytest.raises(BundleError, match=f"add up to more than {size - 1} bytes; refused unread"):
        open_bundle(good_bundle, max_total_bytes=size - 1)
    assert MAX_TOTAL_BYTES < SPARSE_BYTES


def test_builtin_validator_agrees_with_jsonschema(lr_result: Any) -> None:  # noqa: F811
    """The device's stdlib validator and the reference jsonschema agree on the real and every malformed manifest."""
    schema = json.loads(SCHEMA_PATH.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    real = json.loads(canonical_json(lr_result.manifest))
    check_manifest(real)
    jsonschema.validate(real, schema)
    for case, (edit, _) in MALFORMED.items():
        m = json.loads(canonical_json(real))
        edit(m)
        with pytest.raises(ManifestError):
            check_manifest(m)
        if case not in SCHEMA_BEYOND:  # rules beyond JSON Schema, and `$` that Python's re (used by jsonschema) lets match before "\n"
            with pytest.raises(jsonschema.ValidationError):
                jsonschema.validate(m, schema)
    whole = dict(real, version=7.0)  # a whole float is an integer to JSON Schema; to us, by design, it is not
    with pytest.raises(ManifestError, match="version: must be integer"):
        check_manifest(whole)


def test_writer_refuses_to_sign_an_invalid_manifest(lr_result: Any, keypair: dict[str, Any]) -> None:  # noqa: F811
    from compiler.bundle import bundle_files

    m = json.loads(canonical_json(lr_result.manifest))
    m["name"] = "../../x"
    with pytest.raises(BundleError, match="name"):
        bundle_files(m, [], keypair["private"])


def test_manifest_cli_inspect_refuses_malformed(crafted: dict[str, tuple[Path, str]], tmp_path: Path) -> None:
    rc, out, err, _ = _cli(["inspect", str(crafted["signed-artifacts-a-string"][0])], tmp_path)
    assert rc == 1 and out == ""
    _one_line_refusal(err, "malformed manifest: artifacts", "inspect")


def test_signed_bundle_whose_artifact_does_not_run_is_refused_in_one_line(lr_result: Any, keypair: dict[str, Any], tmp_path: Path) -> None:  # noqa: F811
    """Signature and sha256 hold, but the artifact is not a model, or the manifest names a wrong input: one line, never a traceback."""
    import hashlib

    def garbage(m: dict[str, Any]) -> None:
        m["artifacts"][0].update(size=len(junk), sha256=hashlib.sha256(junk).hexdigest())

    junk = b"not an onnx model" * 8
    bad_model = _good_files(lr_result, keypair["private"], edit=garbage)
    bad_model["artifacts/model.onnx"] = junk
    wrong_input = _good_files(lr_result, keypair["private"], edit=lambda m: m["artifacts"][0]["inputs"][0].update(name="nope"))
    records = tmp_path / "records.jsonl"
    records.write_text(json.dumps(lr_result.manifest["canary"]["rows"][0]["input"]) + "\n")
    store = ModelStore(tmp_path / "device", keypair["public"])
    store.install(_tar(tmp_path / "v1.tar", _files_entries(_good_files(lr_result, keypair["private"], version=1))))
    for case, files, expect in [("junk-onnx", bad_model, "its onnx artifact does not load in onnxruntime: InvalidProtobuf"),
                                ("wrong-input-name", wrong_input, "its onnx artifact failed to score: InvalidArgument")]:
        path = _tar(tmp_path / f"{case}.tar", _files_entries(files))
        assert verify(open_bundle(path), keypair["public"])["version"] == 2  # the signature and hashes are right
        rc, out, err, _ = _cli(["score", str(path), "--pubkey", str(keypair["public_path"]), "--input", str(records)], tmp_path)
        assert rc == 1 and out == "", (case, rc, out)
        _one_line_refusal(err, expect, case)
        with pytest.raises(InstallError) as info:
            store.install(path)
        _one_line_refusal(str(info.value), expect.split(":")[0], case)
        assert store.active_version == 1


def test_score_cli_bad_input_files_are_one_line(good_bundle: Path, keypair: dict[str, Any], lr_result: Any, tmp_path: Path) -> None:  # noqa: F811
    (tmp_path / "binary.jsonl").write_bytes(b"\xff\xfe{}\n")
    (tmp_path / "binary.csv").write_bytes(b"gender,\xff\n")
    (tmp_path / "deep.jsonl").write_text("[" * 100_000 + "]" * 100_000 + "\n")
    (tmp_path / "good.jsonl").write_text(json.dumps(lr_result.manifest["canary"]["rows"][0]["input"]) + "\n")
    cases = [("binary.jsonl", None, "binary.jsonl is not UTF-8 text"), ("binary.csv", None, "is not UTF-8"),
             ("deep.jsonl", None, "line 1 is nested too deeply"), ("good.jsonl", str(tmp_path / "no" / "dir" / "out.jsonl"), "dir does not exist")]

    def run(case: tuple[str, str | None, str]) -> tuple[tuple[str, str | None, str], tuple[int, str, str, int]]:
        name, output, _ = case
        args = ["score", str(good_bundle), "--pubkey", str(keypair["public_path"]), "--input", str(tmp_path / name)]
        return case, _cli(args + (["--output", output] if output else []), tmp_path)

    with ThreadPoolExecutor(max_workers=2) as pool:
        for (name, output, expect), (rc, out, err, _) in pool.map(run, cases):
            # an unwritable --output is a usage error (argparse type, exit 2), refused before any scoring
            assert rc == (2 if output else 1) and out == "", (name, rc, out, err)
            if output:
                assert "argument --output:" in err, err
            _one_line_refusal(err, expect, name)
