"""The PyTorch side of a trace: the same names as gemma_np.nn.trace, captured from transformers' Gemma3TextModel
and the sentence-transformers modules with hooks.

For tests, goldens and `gemma-np verify torch` only: gemma_np itself never imports torch. The
attention probabilities are not an output of the default (sdpa) attention, so the model runs with an
attention function registered here, "gemma_np_trace": transformers' eager attention (same mask, same
float32 softmax) plus recording of q and k after the rotary embedding, the scores and the probabilities.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

ATTN_IMPL = "gemma_np_trace"
_CURRENT: dict | None = None  # the trace being recorded (the attention function reads it)
_MAPS = True  # whether to record attention scores and probabilities ([B, H, S, T] per layer)


def _register() -> None:
    import torch
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask
    from transformers.models.gemma3.modeling_gemma3 import repeat_kv

    def traced_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, softcap=None,
                         **kwargs):
        # transformers' eager_attention_forward, step for step, recording as it goes.
        key_states = repeat_kv(key, module.num_key_value_groups)
        value_states = repeat_kv(value, module.num_key_value_groups)
        scores = torch.matmul(query, key_states.transpose(2, 3)) * scaling  # [B, H, S, T]
        if attention_mask is not None:
            masked = scores + attention_mask
        else:
            masked = scores
        probs = torch.nn.functional.softmax(masked, dim=-1, dtype=torch.float32).to(query.dtype)
        out = torch.matmul(probs, value_states).transpose(1, 2).contiguous()  # [B, S, H, E]
        if _CURRENT is not None:
            p = f"layers.{module.layer_idx}.self_attn."
            _CURRENT[p + "q_rope"] = query.transpose(1, 2)  # [B, H, S, E] -> [B, S, H, E]
            _CURRENT[p + "k_rope"] = key.transpose(1, 2)  # [B, K, T, E] -> [B, T, K, E]
            if _MAPS:
                _CURRENT[p + "scores"] = scores
                _CURRENT[p + "probs"] = probs
            _CURRENT[p + "attn_output"] = out.reshape(out.shape[0], out.shape[1], -1)
        return out, probs

    AttentionInterface.register(ATTN_IMPL, traced_attention)
    AttentionMaskInterface.register(ATTN_IMPL, eager_mask)


class TorchReference:
    """A sentence-transformers model of a folder, run with hooks that record gemma_np.nn.trace's names."""

    def __init__(self, model_dir: str | Path, dtype: str = "float32", threads: int | None = None):
        try:
            import torch
            from sentence_transformers import SentenceTransformer
        except ImportError as e:  # the reference stack is a test/verify dependency only
            raise ImportError(f"verify torch needs torch and sentence-transformers ({e}); install "
                              "torch==2.13.0 then `pip install -e .[test]`") from None
        _register()
        if threads:
            torch.set_num_threads(threads)
        self.torch = torch
        # Loaded in the dtype, as a user would (model_kwargs), rather than cast after loading: `.to(bfloat16)`
        # would also round the rotary inv_freq buffers, which transformers keeps in float32 when it loads.
        dt = getattr(torch, dtype)
        self.st = SentenceTransformer(str(model_dir), device="cpu", model_kwargs={"dtype": dt})
        for module in list(self.st)[1:]:  # Pooling, Dense, Normalize
            module.to(dt)
        self.encoder = self.st[0].auto_model
        self.encoder.set_attn_implementation(ATTN_IMPL)
        self._hooks = self._install_hooks()

    def _install_hooks(self) -> list:
        enc = self.encoder
        hooks = []

        def save(name, fn=lambda t: t):
            def hook(_module, _inputs, output):
                if _CURRENT is not None:
                    _CURRENT[name] = fn(output[0] if isinstance(output, tuple) else output)
            return hook

        def save_input(name):
            def hook(_module, inputs):
                if _CURRENT is not None:
                    _CURRENT[name] = inputs[0]
            return hook

        def heads(t):  # [B, S, N*E] -> [B, S, N, E]
            return t.reshape(t.shape[0], t.shape[1], -1, enc.config.head_dim)

        hooks.append(enc.embed_tokens.register_forward_hook(save("embed_tokens")))

        def save_rope(_module, args, kwargs, output):  # rotary_emb(x, position_ids, layer_type) -> cos, sin
            layer_type = kwargs.get("layer_type", args[2] if len(args) > 2 else None)
            if _CURRENT is not None:
                _CURRENT[f"rope.{layer_type}.cos"], _CURRENT[f"rope.{layer_type}.sin"] = output[0][0], output[1][0]

        hooks.append(enc.rotary_emb.register_forward_hook(save_rope, with_kwargs=True))
        hooks.append(enc.norm.register_forward_hook(save("norm")))
        for i, layer in enumerate(enc.layers):
            p = f"layers.{i}."
            a = layer.self_attn
            hooks.append(layer.register_forward_pre_hook(save_input(p + "_input")))
            hooks.append(layer.register_forward_hook(save(p + "output")))
            for n in ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm",
                      "post_feedforward_layernorm"):
                hooks.append(getattr(layer, n).register_forward_hook(save(p + n)))
            for n in ("q_proj", "k_proj", "v_proj"):
                hooks.append(getattr(a, n).register_forward_hook(save(p + "self_attn." + n, heads)))
            for n in ("q_norm", "k_norm"):  # [B, N, S, E] -> [B, S, N, E]
                hooks.append(getattr(a, n).register_forward_hook(save(p + "self_attn." + n,
                                                                      lambda t: t.transpose(1, 2))))
            hooks.append(a.o_proj.register_forward_hook(save(p + "self_attn.o_proj")))
            for n in ("gate_proj", "up_proj", "down_proj"):
                hooks.append(getattr(layer.mlp, n).register_forward_hook(save(p + "mlp." + n)))
            hooks.append(layer.mlp.down_proj.register_forward_pre_hook(save_input(p + "mlp.act")))
        return hooks

    def trace(self, input_ids: np.ndarray, attention_mask: np.ndarray,
              attention_maps: bool = True) -> dict[str, np.ndarray]:
        """Run one padded batch; return every named intermediate as a NumPy array (gemma_np's layout).
        attention_maps False leaves out the [B, H, S, T] scores and probabilities (large for long texts)."""
        global _CURRENT, _MAPS
        torch = self.torch
        rec: dict = {}
        features = {"input_ids": torch.as_tensor(input_ids), "attention_mask": torch.as_tensor(attention_mask)}
        _CURRENT, _MAPS = rec, attention_maps
        try:
            with torch.inference_mode():
                features = self.st[0](features)
                dense = 0
                for module in list(self.st)[1:]:
                    features = module(features)
                    kind = type(module).__name__
                    if kind == "Pooling":
                        rec["pooled"] = features["sentence_embedding"]
                    elif kind == "Dense":
                        rec[f"dense.{dense}"] = features["sentence_embedding"]
                        dense += 1
                rec["sentence_embedding"] = features["sentence_embedding"]
        finally:
            _CURRENT = None
        for i in range(len(self.encoder.layers)):
            p = f"layers.{i}."
            rec[p + "attn_residual"] = rec.pop(p + "_input") + rec[p + "post_attention_layernorm"]
        # bfloat16 has no NumPy type: widened to float32, which holds every bfloat16 value exactly
        return {k: (v.float() if v.dtype == torch.bfloat16 else v).detach().cpu().numpy() for k, v in rec.items()}
