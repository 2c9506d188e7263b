"""The whole model, forward and backward: the encoder, then the sentence head, on one padded batch.

    pad_batch          B id lists -> input_ids, mask [B, S], right-padded with the padding id
    sentence_forward   input_ids, mask [B, S] -> token embeddings [B, S, D], sentence embeddings [B, 768]
    sentence_backward  d sentence embeddings [B, 768] -> the gradient of every parameter

Axes: B batch, S sequence, D hidden, N the sentence embedding's size (768).

Why a module of its own: the encoder (encoder.py) ends at the token embeddings and the head (head.py) begins
there; neither knows the other. The model is their composition, and its backward sits beside its forward here,
as every step's does in its own file. EmbeddingGemma.forward (gemma_np/model.py) and the trainer
(gemma_np/train/step.py) both call these two functions, so inference and training run the same forward.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .attention import sub_cache
from .encoder import PADDING_IDX, accumulate, encoder_backward, encoder_forward
from .head import sentence_head, sentence_head_backward

if TYPE_CHECKING:  # an annotation only: nn/ imports nothing of gemma_np's outside nn/ when it runs
    from ..io.config import GemmaConfig


def pad_batch(ids: list[list[int]], pad_id: int = PADDING_IDX) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad a batch of id lists with pad_id.  -> input_ids [B, S] int64, attention_mask [B, S] int64

    S is the longest list's length; the mask is 1 on the real tokens, 0 on the padding. An empty batch, or an
    empty id list in it, is refused: no text has zero tokens (the tokenizer adds <bos> and <eos>).
    """
    if not ids or any(len(x) == 0 for x in ids):
        raise ValueError("every text of a batch needs at least one token id (and a batch at least one text)")
    S = max(len(x) for x in ids)
    input_ids = np.full((len(ids), S), pad_id, dtype=np.int64)  # [B, S]
    mask = np.zeros((len(ids), S), dtype=np.int64)  # [B, S]
    for b, x in enumerate(ids):
        input_ids[b, : len(x)] = x
        mask[b, : len(x)] = 1
    return input_ids, mask


def sentence_forward(
    input_ids: np.ndarray,
    mask: np.ndarray,
    params: dict[str, np.ndarray],
    dense_weights: list[np.ndarray],
    cfg: GemmaConfig,
    dtype: np.dtype = np.float32,
    normalize: bool = True,
    embed_scale: float | None = None,
    output_hidden_states: bool = False,
    trace: dict | None = None,
    cache: dict | None = None,
    cache_from: int = 0,
    start: np.ndarray | None = None,
) -> dict[str, object]:
    """The whole model on one padded batch.  input_ids, mask [B, S] ->

    {"token_embeddings": [B, S, D] after the final norm, "sentence_embedding": [B, N] (pooled, each Dense,
    L2-normalized when `normalize`; not truncated)}, and with output_hidden_states "hidden_states": the L + 1
    arrays of encoder_forward. Keys as sentence-transformers' features.

    params: model.safetensors' tensors by name; dense_weights: each Dense's [out, in]; embed_scale: sqrt(D) as
    the weights' dtype rounds it (None: in `dtype`). With a `trace` dict, every name of gemma_np.nn.trace is
    recorded, each passing through the trace's tap (which may change it: the forward goes on with what it
    returns). With a `cache` dict, stores what sentence_backward reads: the encoder's under "encoder" (layers
    cache_from and above only, see encoder_forward), the head's under "head". `start`: the input of layer
    cache_from [B, S, D], computed before (encoder_states): the forward begins there (encoder_forward).
    """
    tokens, hidden = encoder_forward(input_ids, mask, params, cfg, dtype, output_hidden_states, trace, embed_scale,
                                     sub_cache(cache, "encoder"), cache_from, start)  # [B, S] -> [B, S, D]
    emb = sentence_head(tokens, mask, dense_weights, normalize, trace, sub_cache(cache, "head"))  # [B, N]
    out = {"token_embeddings": tokens, "sentence_embedding": emb}
    if output_hidden_states:
        out["hidden_states"] = hidden
    return out


def sentence_backward(demb: np.ndarray, cache: dict, dense_names: list[str], embed_tokens: bool = True,
                      into: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Gradients of every parameter from the gradient of the sentence embeddings.  demb [B, N] -> {name: grad}

    `cache` as sentence_forward filled it. Names: the encoder's as in params (see encoder_backward, which also
    says what embed_tokens=False and a cache from a layer up leave out), and dense_names[j] for the j-th Dense's
    [out, in] weight. `into`: gradients of earlier batches to add these to, in place; it is returned.
    """
    dtokens, ddense = sentence_head_backward(demb, cache["head"])  # [B, S, D], [out, in] each
    grads = encoder_backward(dtokens, cache["encoder"], embed_tokens=embed_tokens, into=into)
    for name, g in zip(dense_names, ddense):
        accumulate(grads, name, g)
    return grads
