"""GGUF files of EmbeddingGemma made by llama.cpp's own tools, for `gemma-np verify gguf`.

    python -m weights_tools.gguf_convert [--model DIR] [--out DIR] [--types f32,q8_0,q4_k_m] [--no-dense]

A GGUF that llama.cpp reads is best made the way users make it: with llama.cpp's converter
(convert_hf_to_gguf.py, with its --sentence-transformers-dense-modules option, or the Dense layers are
left out) and llama.cpp's quantizer. Both come from llama.cpp itself:

- the converter from the source archive of llama-cpp-python (the same release as the installed
  llama-cpp-python, so file and runtime agree; 0.3.36 when none is installed), fetched from the package index
  and checked against the index's SHA-256. It runs in a subprocess with torch and its own copy of gguf-py.
- the quantizer through llama-cpp-python's binding of llama_model_quantize (needs the `llama-cpp` extra).

Files land in <cache root>/gguf/<first 16 hex digits of the weights' SHA-256>/, named
embeddinggemma-300m-<type>[-nodense].gguf, and are reused when present (a file is written under a temporary
name and renamed when complete). Without --no-dense every file carries the Dense layers.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from pathlib import Path

from weights_tools import checksums
from weights_tools.paths import default_cache_root, default_model_dir

PACKAGE, DEFAULT_VERSION = "llama-cpp-python", "0.3.36"
INDEX = os.environ.get("GEMMA_NP_SIMPLE_INDEX", "https://pypi.org/simple")
# llama.cpp's file types (enum llama_ftype in llama.h), by the names its quantize tool takes.
FTYPES = {"f32": 0, "f16": 1, "q4_0": 2, "q8_0": 7, "q5_0": 8, "q4_k_m": 15, "q5_k_m": 17, "q6_k": 18}
CONVERTED = ("f32", "f16")  # written by the converter; the others quantize the f32 file


class ConvertError(RuntimeError):
    """A GGUF could not be made; the message names the step and the fix."""


def _log(message: str) -> None:
    print(f"[gguf_convert] {message}", file=sys.stderr, flush=True)


def weights_key() -> str:
    """The first 16 hex digits of the pinned model.safetensors SHA-256: the cache folder's name."""
    return checksums.SNAPSHOT_SHA256["model.safetensors"][1][:16]


def default_out_dir() -> Path:
    return default_cache_root() / "gguf" / weights_key()


def gguf_path(out: Path, kind: str, dense: bool = True) -> Path:
    return Path(out) / f"embeddinggemma-300m-{kind}{'' if dense else '-nodense'}.gguf"


def installed_version() -> str | None:
    from importlib import metadata

    try:
        return metadata.version(PACKAGE)
    except metadata.PackageNotFoundError:
        return None


# ------------------------------------------------------------------------------------------------ converter
def _sdist(version: str, cache: Path) -> Path:
    """llama-cpp-python's source archive, from the package index (PEP 691 JSON), checked by SHA-256."""
    name = f"llama_cpp_python-{version}.tar.gz"
    path = cache / name
    if path.exists():
        return path
    url = f"{INDEX.rstrip('/')}/{PACKAGE}/"
    req = urllib.request.Request(url, headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            files = json.load(r)["files"]
        entry = next(f for f in files if f["filename"] == name)
    except StopIteration:
        raise ConvertError(f"{url}: no {name} in the index; pass --llama-cpp-version with a published "
                           "release") from None
    except (OSError, ValueError, KeyError) as e:
        raise ConvertError(f"{url}: cannot read the package index ({e}); set GEMMA_NP_SIMPLE_INDEX to a "
                           "reachable simple index") from None
    want = entry.get("hashes", {}).get("sha256")
    _log(f"downloading {name}")
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".partial")
    digest = hashlib.sha256()
    with urllib.request.urlopen(entry["url"], timeout=300) as r, open(tmp, "wb") as f:
        while chunk := r.read(1 << 20):
            digest.update(chunk)
            f.write(chunk)
    if want and digest.hexdigest() != want:
        tmp.unlink()
        raise ConvertError(f"{name}: sha256 {digest.hexdigest()} is not the index's {want}")
    tmp.rename(path)
    return path


def converter(version: str | None = None, cache: Path | None = None) -> Path:
    """The folder holding llama.cpp's convert_hf_to_gguf.py (with conversion/ and gguf-py/) of `version`."""
    version = version or installed_version() or DEFAULT_VERSION
    cache = cache or default_cache_root() / "llama.cpp"
    folder = cache / f"llama.cpp-{version}"
    script = folder / "convert_hf_to_gguf.py"
    if script.exists():
        return folder
    archive = _sdist(version, cache)
    prefix = f"llama_cpp_python-{version}/vendor/llama.cpp/"
    keep = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/")
    tmp = Path(tempfile.mkdtemp(prefix="llama.cpp-", dir=cache))
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if m.name.startswith(prefix)
                   and m.name[len(prefix):].startswith(keep) and (m.isfile() or m.isdir())]
        for m in members:
            m.name = m.name[len(prefix):]
        tar.extractall(tmp, members=members, filter="data")
    if not (tmp / "convert_hf_to_gguf.py").exists():
        shutil.rmtree(tmp)
        raise ConvertError(f"{archive.name}: no vendor/llama.cpp/convert_hf_to_gguf.py inside")
    tmp.rename(folder)
    return folder


def convert(model_dir: Path, out: Path, outtype: str = "f32", dense: bool = True, version: str | None = None) -> Path:
    """Convert the sentence-transformers folder with llama.cpp's converter; return the GGUF's path."""
    target = gguf_path(out, outtype, dense)
    if target.exists():
        return target
    script = converter(version) / "convert_hf_to_gguf.py"
    out.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    cmd = [sys.executable, str(script), str(model_dir), "--outtype", outtype, "--outfile", str(partial)]
    if dense:
        cmd.append("--sentence-transformers-dense-modules")
    _log(f"converting with llama.cpp's convert_hf_to_gguf.py ({outtype}{'' if dense else ', no Dense'})")
    t = time.perf_counter()
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if proc.returncode != 0 or not partial.exists():
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-8:])
        raise ConvertError(f"convert_hf_to_gguf.py failed on {model_dir} (exit {proc.returncode}):\n{tail}")
    partial.rename(target)
    _log(f"wrote {target.name} ({target.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - t:.0f} s")
    return target


def quantize(source: Path, kind: str, dense: bool = True) -> Path:
    """Quantize an f32 GGUF with llama.cpp's quantizer (llama_model_quantize), as its llama-quantize does."""
    target = gguf_path(source.parent, kind, dense)
    if target.exists():
        return target
    try:
        import llama_cpp
    except ImportError:
        raise ConvertError("quantizing needs llama.cpp's quantizer: pip install 'gemma-np[llama-cpp]' "
                           "(builds llama-cpp-python from source)") from None
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = FTYPES[kind]
    params.nthread = os.cpu_count() or 1
    partial = target.with_suffix(".partial")
    _log(f"quantizing {source.name} to {kind}")
    t = time.perf_counter()
    rc = llama_cpp.llama_model_quantize(str(source).encode(), str(partial).encode(), params)
    if rc != 0 or not partial.exists():
        raise ConvertError(f"llama_model_quantize({source.name} -> {kind}) failed with code {rc}")
    partial.rename(target)
    _log(f"wrote {target.name} ({target.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - t:.0f} s")
    return target


def make(model_dir: Path, out: Path, kinds: list[str], dense: bool = True, version: str | None = None) -> list[Path]:
    """The GGUF files of `kinds` (f32/f16 converted, the rest quantized from f32), made once, then reused."""
    unknown = [k for k in kinds if k not in FTYPES]
    if unknown:
        raise ConvertError(f"unknown type(s) {', '.join(unknown)}; known: {', '.join(FTYPES)}")
    paths = []
    for kind in kinds:
        if kind in CONVERTED:
            paths.append(convert(model_dir, out, kind, dense, version))
        else:
            paths.append(quantize(convert(model_dir, out, "f32", dense, version), kind, dense))
    return paths


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m weights_tools.gguf_convert", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=None, help="the sentence-transformers folder (default: the cache)")
    p.add_argument("--out", type=Path, default=None, help="where the GGUF files go (default: <cache>/gguf/<hash>)")
    p.add_argument("--types", default="f32", help=f"comma-separated, from {', '.join(FTYPES)} (default f32)")
    p.add_argument("--no-dense", action="store_true", help="leave the Dense layers out, as the converter does "
                   "without its --sentence-transformers-dense-modules option")
    p.add_argument("--llama-cpp-version", default=None, help="whose converter to use (default: the installed "
                   f"llama-cpp-python, else {DEFAULT_VERSION})")
    args = p.parse_args(argv)
    model_dir = args.model or default_model_dir()
    if not (model_dir / "config.json").exists():
        print(f"error: {model_dir}: no config.json; fetch the weights first (python -m weights_tools.fetch)",
              file=sys.stderr)
        return 2
    try:
        paths = make(model_dir, args.out or default_out_dir(), [k.strip() for k in args.types.split(",") if k.strip()],
                     dense=not args.no_dense, version=args.llama_cpp_version)
    except ConvertError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
