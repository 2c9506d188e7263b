"""Reading and checking the model folder's configuration files.

A sentence-transformers folder of EmbeddingGemma holds, besides the weights:

    config.json                         the Gemma3 encoder (Gemma3TextModel)
    modules.json                        the pipeline: Transformer -> Pooling -> Dense -> Dense -> Normalize
    1_Pooling/config.json               mean pooling, prompt tokens included
    2_Dense/config.json, 3_Dense/...    768 -> 3072 -> 768, no bias, identity activation
    config_sentence_transformers.json   the task prompts
    sentence_bert_config.json           max_seq_length

Everything gemma_np does not implement is refused here, with the file and the key named, rather than
silently computed some other way.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelFolderError

LAYER_TYPES = ("sliding_attention", "full_attention")


@dataclass(frozen=True)
class GemmaConfig:
    """The Gemma3 text encoder, as gemma_np runs it. Values as in config.json unless said otherwise."""

    vocab_size: int  # rows of embed_tokens.weight (262144)
    hidden_size: int  # D (768)
    intermediate_size: int  # F (1152)
    num_hidden_layers: int  # 24
    num_attention_heads: int  # H, query heads (3)
    num_key_value_heads: int  # K, kv heads shared by H // K query heads each (1)
    head_dim: int  # E (256)
    layer_types: tuple[str, ...]  # "sliding_attention" or "full_attention", one per layer
    sliding_window: int  # as stored in config.json (512); see `attention_window`
    rope_theta: float  # rotary base of the full-attention layers (1e6)
    rope_local_base_freq: float  # rotary base of the sliding layers (1e4)
    query_pre_attn_scalar: float  # scores are scaled by query_pre_attn_scalar ** -0.5 (256)
    rms_norm_eps: float  # 1e-6
    max_position_embeddings: int  # 2048

    @property
    def attention_window(self) -> int:
        """The runtime window of a sliding layer: query i sees key j where abs(i - j) < attention_window.

        transformers' Gemma3TextConfig halves the stored window when use_bidirectional_attention is set
        (`sliding_window // 2 + 1`, "due to fa we set exclusive bounds"): 512 -> 257, i.e. 256 tokens on
        each side. Matching that on purpose is what keeps documents longer than 257 tokens exact.
        """
        return self.sliding_window // 2 + 1

    def rope_base(self, layer_type: str) -> float:
        return self.rope_local_base_freq if layer_type == "sliding_attention" else self.rope_theta


@dataclass(frozen=True)
class HeadConfig:
    """What sentence-transformers puts after the encoder: pooling, the Dense layers, normalization."""

    dense_shapes: tuple[tuple[int, int], ...]  # (out, in) of each Dense, in order
    dense_folders: tuple[str, ...]  # "2_Dense", "3_Dense"
    normalize: bool  # a Normalize module ends the pipeline
    max_seq_length: int  # tokens kept per text, <bos> and <eos> included
    prompts: dict[str, str]  # prompt name -> prompt text
    default_prompt_name: str | None

    @property
    def embedding_dim(self) -> int:
        return self.dense_shapes[-1][0] if self.dense_shapes else -1


def read_json(path: Path) -> object:
    """Read one JSON file; a missing or malformed file raises an error that names it."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: required file of the model folder is missing")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as e:  # bad UTF-8 or JSON, an int of > 4300 digits, absurd nesting
        raise ModelFolderError(f"{path}: not valid JSON ({type(e).__name__}: {str(e)[:200]})") from None


def read_json_object(path: Path) -> dict:
    """read_json, refusing anything but a JSON object (with the file and what it held named)."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise ModelFolderError(f"{path}: expected a JSON object, found {type(data).__name__}")
    return data


def _int(cfg: dict, key: str, where: str, minimum: int = 1) -> int:
    v = cfg.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise ModelFolderError(f"{where}: '{key}' must be an integer >= {minimum}, found {v!r}")
    return v


def _float(cfg: dict, key: str, where: str) -> float:
    v = cfg.get(key)
    # compared rather than math.isfinite(v), which raises OverflowError for an int too large for a float
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= sys.float_info.max:
        raise ModelFolderError(f"{where}: '{key}' must be a positive number, found {v!r}")
    return float(v)


def _refuse(cfg: dict, key: str, allowed: tuple, where: str, why: str) -> None:
    if cfg.get(key) not in allowed:
        raise ModelFolderError(
            f"{where}: '{key}' = {cfg.get(key)!r} is not implemented by gemma_np "
            f"(supported: {', '.join(repr(a) for a in allowed)}); {why}"
        )


def _rope_bases(cfg: dict, where: str) -> tuple[float, float]:
    """(full, sliding) rotary bases. Older configs (the published one) use rope_theta and
    rope_local_base_freq with rope_scaling null; transformers 5 writes a rope_parameters dict per layer type."""
    params = cfg.get("rope_parameters")
    if isinstance(params, dict) and "full_attention" in params:
        bases = []
        for layer_type in ("full_attention", "sliding_attention"):
            p = params.get(layer_type)
            if not isinstance(p, dict):
                raise ModelFolderError(f"{where}: 'rope_parameters.{layer_type}' is missing")
            _refuse(p, "rope_type", ("default",), f"{where}: rope_parameters.{layer_type}",
                    "only plain rotary embeddings (no scaling) are implemented")
            bases.append(_float(p, "rope_theta", f"{where}: rope_parameters.{layer_type}"))
        return bases[0], bases[1]
    if params is not None and not isinstance(params, dict):
        raise ModelFolderError(f"{where}: 'rope_parameters' must be an object, found {params!r}")
    _refuse(cfg, "rope_scaling", (None,), where, "only plain rotary embeddings (no scaling) are implemented")
    return _float(cfg, "rope_theta", where), _float(cfg, "rope_local_base_freq", where)


def parse_gemma_config(cfg: dict, where: str = "config.json") -> GemmaConfig:
    """Check a config.json dict and keep what the forward pass needs. Refuses anything not implemented."""
    _refuse(cfg, "model_type", ("gemma3_text",), where, "gemma_np implements the Gemma3 text encoder only")
    _refuse(cfg, "use_bidirectional_attention", (True,), where,
            "EmbeddingGemma is an encoder; a causal Gemma3 is a different model")
    _refuse(cfg, "hidden_activation", ("gelu_pytorch_tanh",), where, "the MLP uses the tanh approximation of GELU")
    _refuse(cfg, "attn_logit_softcapping", (None,), where, "attention logit softcapping is not implemented")
    _refuse(cfg, "final_logit_softcapping", (None,), where, "final logit softcapping is not implemented")
    if cfg.get("attention_bias", False) is not False:
        raise ModelFolderError(f"{where}: 'attention_bias' = {cfg['attention_bias']!r} is not implemented "
                               "(the attention projections have no bias)")
    n_layers = _int(cfg, "num_hidden_layers", where)
    layer_types = cfg.get("layer_types")
    if not isinstance(layer_types, list) or len(layer_types) != n_layers:
        raise ModelFolderError(f"{where}: 'layer_types' must list one type per layer "
                               f"(num_hidden_layers = {n_layers}), found {layer_types!r}")
    for i, t in enumerate(layer_types):
        if t not in LAYER_TYPES:
            raise ModelFolderError(f"{where}: layer_types[{i}] = {t!r} is not implemented "
                                   f"(supported: {', '.join(LAYER_TYPES)})")
    heads, kv_heads = _int(cfg, "num_attention_heads", where), _int(cfg, "num_key_value_heads", where)
    if heads % kv_heads:
        raise ModelFolderError(f"{where}: num_attention_heads ({heads}) must be a multiple of "
                               f"num_key_value_heads ({kv_heads})")
    full_base, sliding_base = _rope_bases(cfg, where)
    head_dim = _int(cfg, "head_dim", where)
    if head_dim % 2:
        raise ModelFolderError(f"{where}: 'head_dim' must be even for rotary embeddings, found {head_dim}")
    sliding = cfg.get("sliding_window")
    if "sliding_attention" in layer_types:
        sliding = _int(cfg, "sliding_window", where)
    return GemmaConfig(
        vocab_size=_int(cfg, "vocab_size", where),
        hidden_size=_int(cfg, "hidden_size", where),
        intermediate_size=_int(cfg, "intermediate_size", where),
        num_hidden_layers=n_layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=head_dim,
        layer_types=tuple(layer_types),
        sliding_window=sliding if isinstance(sliding, int) else 0,
        rope_theta=full_base,
        rope_local_base_freq=sliding_base,
        query_pre_attn_scalar=_float(cfg, "query_pre_attn_scalar", where),
        rms_norm_eps=_float(cfg, "rms_norm_eps", where),
        max_position_embeddings=_int(cfg, "max_position_embeddings", where),
    )


# modules.json: the sentence-transformers pipeline we implement, in this order.
_TRANSFORMER, _POOLING, _DENSE, _NORMALIZE = (
    f"sentence_transformers.models.{n}" for n in ("Transformer", "Pooling", "Dense", "Normalize")
)
_IDENTITY = ("torch.nn.modules.linear.Identity",)
_POOLING_OFF = ("pooling_mode_cls_token", "pooling_mode_max_tokens", "pooling_mode_mean_sqrt_len_tokens",
                "pooling_mode_weightedmean_tokens", "pooling_mode_lasttoken")


def _module_type(entry: dict) -> str:
    # sentence-transformers 6 may write sentence_transformers.base.modules.X / sentence_transformer.modules.X
    t = entry.get("type")
    return f"sentence_transformers.models.{t.rsplit('.', 1)[-1]}" if isinstance(t, str) else repr(t)


def read_head_config(folder: Path, gemma: GemmaConfig) -> HeadConfig:
    """modules.json and the module configs: Transformer, mean Pooling, Dense..., Normalize."""
    modules = read_json(folder / "modules.json")
    if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
        raise ModelFolderError(f"{folder / 'modules.json'}: expected a list of module objects")
    types = [_module_type(m) for m in modules]
    where = "modules.json"
    if not types or types[0] != _TRANSFORMER or modules[0].get("path", "") != "":
        raise ModelFolderError(f"{where}: the first module must be the Transformer at the folder's top, found {types[:1]}")
    if len(types) < 2 or types[1] != _POOLING:
        raise ModelFolderError(f"{where}: the second module must be Pooling, found {types[1:2]}")
    rest = types[2:]
    normalize = bool(rest) and rest[-1] == _NORMALIZE
    dense_modules = modules[2:len(types) - int(normalize)]
    for m, t in zip(dense_modules, types[2:]):
        if t != _DENSE:
            raise ModelFolderError(f"{where}: module {m.get('name', '?')!r} of type {m.get('type')!r} is not "
                                   "implemented by gemma_np (supported after Pooling: Dense..., then Normalize)")
    for m in modules[1:len(dense_modules) + 2]:  # Pooling and Dense read a config.json from their folder
        p = m.get("path")
        if not isinstance(p, str) or not p or Path(p).is_absolute() or ".." in Path(p).parts:
            raise ModelFolderError(f"{where}: module {m.get('name', '?')!r} of type {m.get('type')!r} has 'path' "
                                   f"{p!r}; it must name its folder inside the model folder (e.g. '1_Pooling')")

    pool_path = folder / modules[1]["path"] / "config.json"
    pool = read_json_object(pool_path)
    pwhere = f"{modules[1]['path']}/config.json"
    if "pooling_mode" in pool:  # sentence-transformers 6 writes one string
        _refuse(pool, "pooling_mode", ("mean",), pwhere, "only mean pooling is implemented")
    else:  # older versions (the published snapshot) write one boolean per mode
        _refuse(pool, "pooling_mode_mean_tokens", (True,), pwhere, "only mean pooling is implemented")
        for key in _POOLING_OFF:
            _refuse(pool, key, (False, None), pwhere, "only mean pooling is implemented")
    _refuse(pool, "include_prompt", (True, None), pwhere, "prompt tokens are always included in the mean")
    for key in ("word_embedding_dimension", "embedding_dimension"):
        if pool.get(key, gemma.hidden_size) != gemma.hidden_size:
            raise ModelFolderError(f"{pwhere}: '{key}' = {pool[key]!r} contradicts config.json "
                                   f"hidden_size = {gemma.hidden_size}")

    shapes, folders, width = [], [], gemma.hidden_size
    for m in dense_modules:
        sub = m["path"]
        dwhere = f"{sub}/config.json"
        d = read_json_object(folder / sub / "config.json")
        _refuse(d, "bias", (False,), dwhere, "the Dense layers of EmbeddingGemma have no bias")
        _refuse(d, "activation_function", _IDENTITY, dwhere, "only the identity activation is implemented")
        _refuse(d, "use_residual", (False, None), dwhere, "residual Dense layers are not implemented")
        for key in ("module_input_name", "module_output_name"):
            _refuse(d, key, ("sentence_embedding", None), dwhere, "Dense layers act on the pooled embedding")
        n_in, n_out = _int(d, "in_features", dwhere), _int(d, "out_features", dwhere)
        if n_in != width:
            raise ModelFolderError(f"{dwhere}: 'in_features' = {n_in} but the previous stage gives {width}")
        shapes.append((n_out, n_in))
        folders.append(sub)
        width = n_out
    if not dense_modules:
        shapes = []

    st = read_json_object(folder / "config_sentence_transformers.json")
    prompts = st.get("prompts", {})
    if not isinstance(prompts, dict):
        raise ModelFolderError(f"config_sentence_transformers.json: 'prompts' must map names to strings, "
                               f"found {prompts!r:.100}")
    for k, v in prompts.items():
        if not isinstance(v, str):
            raise ModelFolderError(f"config_sentence_transformers.json: prompt {k!r} must be a string, "
                                   f"found {v!r:.100}")
    default = st.get("default_prompt_name")
    if default is not None and (not isinstance(default, str) or default not in prompts):
        raise ModelFolderError(f"config_sentence_transformers.json: 'default_prompt_name' = {default!r} "
                               f"is not one of the prompts ({', '.join(prompts)})")
    max_len = _max_seq_length(folder, gemma)
    return HeadConfig(tuple(shapes), tuple(folders), normalize, max_len, dict(prompts), default)


def _max_seq_length(folder: Path, gemma: GemmaConfig) -> int:
    """Tokens kept per text, <bos> and <eos> included, as sentence-transformers decides it: the
    max_seq_length of sentence_bert_config.json (older versions write it; the published snapshot says 2048),
    else the tokenizer's model_max_length capped at max_position_embeddings."""
    sbert = read_json_object(folder / "sentence_bert_config.json")
    where = "sentence_bert_config.json"
    _refuse(sbert, "do_lower_case", (False, None), where, "lower-casing is not implemented")
    limit = gemma.max_position_embeddings
    if sbert.get("max_seq_length") is not None:
        n = _int(sbert, "max_seq_length", where, minimum=2)
        if n > limit:
            raise ModelFolderError(f"{where}: 'max_seq_length' = {n} exceeds config.json "
                                   f"max_position_embeddings = {limit}")
        return n
    tok_cfg = folder / "tokenizer_config.json"
    if tok_cfg.is_file():
        n = read_json_object(tok_cfg).get("model_max_length")
        if isinstance(n, int) and not isinstance(n, bool) and n >= 2:
            return min(n, limit)
    return limit
