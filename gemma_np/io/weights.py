"""Loading the weights of a model folder and checking them against the configuration.

Names stay exactly as in the safetensors files, so a reader can grep one name across gemma_np, transformers
and the file. A missing, extra or misshapen tensor raises an error naming it and both shapes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import WeightsError
from ..nn.encoder import layer_tensor_shapes
from .config import GemmaConfig
from .safetensors import load_safetensors

PICKLE_FILES = ("pytorch_model.bin", "model.bin", "pytorch_model.pt", "model.pt", "model.pth")


def expected_encoder_tensors(cfg: GemmaConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor of model.safetensors with its shape ([out, in] for linear layers); each layer's are
    gemma_np.nn.encoder.LAYER_TENSORS."""
    V, D = cfg.vocab_size, cfg.hidden_size
    shapes: dict[str, tuple[int, ...]] = {"embed_tokens.weight": (V, D), "norm.weight": (D,)}
    layer = layer_tensor_shapes(cfg)  # the 13 tensors of one layer, named after "layers.{i}."
    for i in range(cfg.num_hidden_layers):
        shapes.update({f"layers.{i}.{name}": shape for name, shape in layer.items()})
    return shapes


def check_tensors(found: dict[str, np.ndarray], expected: dict[str, tuple[int, ...]], path: Path) -> None:
    """Raise WeightsError naming the first missing, extra or misshapen tensor."""
    missing = [n for n in expected if n not in found]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise WeightsError(f"{path}: tensor {missing[0]!r} is missing{more}; expected shape {list(expected[missing[0]])}")
    extra = [n for n in found if n not in expected]
    if extra:
        more = f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""
        raise WeightsError(f"{path}: unexpected tensor {extra[0]!r}{more}, shape {list(found[extra[0]].shape)}; "
                           "the configuration does not use it")
    for name, shape in expected.items():
        if tuple(found[name].shape) != shape:
            raise WeightsError(f"{path}: tensor {name!r} has shape {list(found[name].shape)}, "
                               f"the configuration needs {list(shape)}")


def check_finite(name: str, arr: np.ndarray, path: Path) -> None:
    """Raise WeightsError if a tensor holds NaN or Inf."""
    if not np.all(np.isfinite(arr)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise WeightsError(f"{path}: tensor {name!r} holds {bad} NaN or Inf values")


def refuse_pickles(folder: Path, wanted: str) -> None:
    """A folder with only a pickle checkpoint is refused by name: loading one can execute arbitrary code."""
    for name in PICKLE_FILES:
        if (folder / name).exists():
            raise WeightsError(
                f"{folder / name}: gemma_np reads only safetensors and never unpickles a file "
                f"(a pickle can run arbitrary code when loaded). Expected {wanted} in {folder}; convert the "
                "checkpoint to safetensors with a tool you trust, or fetch the published snapshot "
                "(python -m weights_tools.fetch)."
            )


def load_checked(path: Path, expected: dict[str, tuple[int, ...]], dtype: np.dtype,
                 keep_stored: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """Load one safetensors file, check names and shapes, cast to the compute dtype.

    Tensors named in keep_stored (the embedding table) stay memory-mapped as stored and are cast row by
    row when used; the others are checked for NaN/Inf here.
    """
    if not path.is_file():
        refuse_pickles(path.parent, path.name)
        raise FileNotFoundError(f"{path}: required weight file of the model folder is missing")
    found = load_safetensors(path)  # refuses a pickle (torch.save) file by its first bytes
    check_tensors(found, expected, path)
    out = {}
    for name, arr in found.items():
        # Plain ndarray views of the mapped file (no copy): an np.memmap runs Python-level hooks on every
        # operation it takes part in, a fixed cost of about a millisecond per short query in all.
        if name in keep_stored:
            out[name] = np.asarray(arr)
            continue
        check_finite(name, arr, path)
        out[name] = np.asarray(arr, dtype=dtype)  # a view when stored in the compute dtype, else a cast copy
    return out


# Files of a model folder that describe its weights rather than the model: never copied to a saved folder.
# (.gemma_np_verified.json records that the fetched snapshot's files matched their pinned hashes: the saved
# weights are new, so the record would be false there.)
NOT_COPIED = (".gemma_np_verified.json",)


def save_model_folder(source: Path, out: Path, params: dict[str, np.ndarray], dense_folders: tuple[str, ...],
                      dense_weights: list[np.ndarray]) -> None:
    """Write a sentence-transformers model folder: `source`'s files with new weights.

    Every file of `source` but its safetensors files (and NOT_COPIED) is copied as it is: config.json, the
    module configs, the tokenizer, the README. model.safetensors gets `params` under their names, each Dense
    folder's model.safetensors its `linear.weight`; each tensor is written in the dtype `source` stores it in
    (float32 for the published snapshot; BF16 as float32), with the same file metadata: the source's layout.
    `out` must not be `source` or inside it; an existing `out` must be empty or a model folder saved before.
    """
    import shutil

    from .safetensors import read_header, read_metadata, save_safetensors

    written_as = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": np.float32}  # no BF16 writer

    source, out = Path(source).resolve(), Path(out).resolve()
    if out == source or source in out.parents:
        raise ValueError(f"{out}: the saved folder must not be the source folder {source} or inside it")
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / "config.json").is_file():
        raise ValueError(f"{out}: exists, is not empty and holds no config.json; refusing to write a model into it")
    out.mkdir(parents=True, exist_ok=True)
    for f in sorted(source.rglob("*")):
        rel = f.relative_to(source)
        if f.is_dir() or f.suffix == ".safetensors" or rel.name in NOT_COPIED or rel.parts[0].startswith("."):
            continue
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, out / rel)
    files = {"model.safetensors": params}
    files.update({f"{d}/model.safetensors": {"linear.weight": w} for d, w in zip(dense_folders, dense_weights)})
    for rel, tensors in files.items():
        stored = {name: e["dtype"] for name, e in read_header(source / rel)[0].items()}
        missing, extra = sorted(set(stored) - set(tensors)), sorted(set(tensors) - set(stored))
        if missing or extra:
            raise ValueError(f"{source / rel}: the tensors to save differ from the file's (missing {missing[:5]}, "
                             f"extra {extra[:5]})")
        typed = {name: np.asarray(a, dtype=written_as[stored[name]]) for name, a in tensors.items()}
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        save_safetensors(out / rel, typed, read_metadata(source / rel))
