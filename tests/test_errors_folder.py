"""Broken or foreign model folders: copies of the real folder (small files copied, large ones linked) with one
thing damaged. Each must end promptly in a clear error of an ordinary kind whose message names the file,
the key or the tensor, and what would be right."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from gemma_np import EmbeddingGemma
from gemma_np.errors import ModelFolderError, WeightsError

from support_damage import (  # noqa: F401
    Hostile,
    copy_model_folder,
    edit_json,
    read_json,
    real_folder_untouched,
    remove_file,
    set_keys,
    words,
    write_file,
    write_json,
)

pytestmark = pytest.mark.real

DENSE_TANH = "torch.nn.modules.activation.Tanh"


@pytest.fixture
def folder(real_dir, tmp_path) -> Path:
    return copy_model_folder(real_dir, tmp_path / "model")


def load(folder):
    return EmbeddingGemma.from_pretrained(folder)


# ------------------------------------------------------------------------------------------------ the copy
def test_linked_copy_loads_and_encodes(folder, real_dir):
    """The control: an undamaged copy loads, and the large file is a link, not a copy."""
    assert (folder / "model.safetensors").is_symlink()
    assert (folder / "model.safetensors").resolve() == (real_dir / "model.safetensors").resolve()
    v = load(folder).encode("Which planet is known as the Red Planet?")
    assert v.shape == (768,) and np.all(np.isfinite(v))


# ------------------------------------------------------------------------------------------------ the folder
def test_folder_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match=words(str(tmp_path / "nowhere"), "does not exist")):
        load(tmp_path / "nowhere")


def test_file_instead_of_folder(folder):
    with pytest.raises(ModelFolderError, match=words(str(folder / "config.json"), "is a file", "model folder")):
        load(folder / "config.json")


REQUIRED = ["config.json", "modules.json", "1_Pooling/config.json", "2_Dense/config.json",
            "2_Dense/model.safetensors", "3_Dense/config.json", "3_Dense/model.safetensors",
            "config_sentence_transformers.json", "sentence_bert_config.json", "tokenizer.json",
            "model.safetensors"]


@pytest.mark.parametrize("rel", REQUIRED)
def test_required_file_missing(folder, rel):
    remove_file(folder, rel)
    with pytest.raises(FileNotFoundError, match=words(str(folder / rel), "missing")):
        load(folder)


# ------------------------------------------------------------------------------------------------ not JSON
JSON_FILES = ["config.json", "modules.json", "1_Pooling/config.json", "2_Dense/config.json", "3_Dense/config.json",
              "config_sentence_transformers.json", "sentence_bert_config.json"]
NOT_JSON = {
    "truncated": b'{"a": 1,',
    "empty": b"",
    "not-utf8": b'{"a": "\xff\xfe"}',
    "nested-100000-deep": b"[" * 100_000 + b"]" * 100_000,  # json.loads raises RecursionError
    "int-of-5000-digits": b'{"a": ' + b"9" * 5000 + b"}",  # json.loads raises a bare ValueError
}


@pytest.mark.parametrize("bad", NOT_JSON.values(), ids=NOT_JSON.keys())
@pytest.mark.parametrize("rel", JSON_FILES)
def test_json_file_not_json(folder, rel, bad):
    write_file(folder, rel, bad)
    with pytest.raises(ModelFolderError, match=words(str(folder / rel), "not valid JSON")):
        load(folder)


@pytest.mark.parametrize("rel", ["config.json", "1_Pooling/config.json", "2_Dense/config.json",
                                 "3_Dense/config.json", "config_sentence_transformers.json",
                                 "sentence_bert_config.json"])
@pytest.mark.parametrize("value", [[1, 2], "a string", 3, None], ids=["list", "str", "int", "null"])
def test_json_object_of_the_wrong_kind(folder, rel, value):
    write_json(folder, rel, value)
    with pytest.raises(ModelFolderError, match=words(str(folder / rel), "expected a JSON object")):
        load(folder)


@pytest.mark.parametrize("value", [{"0": "Transformer"}, "a string", [1, 2], [["a"]]],
                         ids=["dict", "str", "list-of-int", "list-of-list"])
def test_modules_json_of_the_wrong_kind(folder, value):
    write_json(folder, "modules.json", value)
    message = words(str(folder / "modules.json"), "expected a list of module objects")
    with pytest.raises(ModelFolderError, match=message):
        load(folder)


@pytest.mark.parametrize("bad", [b'{"version": "1.0", "model":', b"[1, 2]", b"\xff\xfe", b""],
                         ids=["truncated", "list", "not-utf8", "empty"])
def test_tokenizer_json_damaged(folder, bad):
    write_file(folder, "tokenizer.json", bad)
    with pytest.raises(ModelFolderError, match=words(str(folder / "tokenizer.json"), "not a valid tokenizer.json")):
        load(folder)


# ------------------------------------------------------------------------------------------------ config.json
def _layer_types(edit):
    def f(cfg):
        cfg["layer_types"] = edit(cfg["layer_types"])
    return f


def _set(**values):
    return lambda cfg: cfg.update(values)


def _delete(key):
    def f(cfg):
        del cfg[key]
    return f


CONFIG_REFUSED = {  # id: (edit of config.json, words of the message after "config.json: ")
    "gelu": (_set(hidden_activation="gelu"), ["'hidden_activation' = 'gelu' is not implemented",
                                                "supported: 'gelu_pytorch_tanh'"]),
    "attn-softcap": (_set(attn_logit_softcapping=50.0), ["'attn_logit_softcapping' = 50.0 is not implemented",
                                                         "supported: None"]),
    "final-softcap": (_set(final_logit_softcapping=30.0), ["'final_logit_softcapping' = 30.0 is not implemented"]),
    "causal": (_set(use_bidirectional_attention=False), ["'use_bidirectional_attention' = False is not implemented",
                                                         "supported: True", "encoder"]),
    "bert": (_set(model_type="bert"), ["'model_type' = 'bert' is not implemented", "supported: 'gemma3_text'"]),
    "attention-bias": (_set(attention_bias=True), ["'attention_bias' = True is not implemented"]),
    "chunked-layer": (_layer_types(lambda t: t[:3] + ["chunked_attention"] + t[4:]),
                      ["layer_types[3] = 'chunked_attention' is not implemented",
                       "sliding_attention, full_attention"]),
    "layer-types-short": (_layer_types(lambda t: t[:20]), ["'layer_types' must list one type per layer",
                                                           "num_hidden_layers = 24"]),
    "layer-types-missing": (_delete("layer_types"), ["'layer_types' must list one type per layer", "None"]),
    "heads-not-multiple": (_set(num_attention_heads=3, num_key_value_heads=2),
                           ["num_attention_heads (3) must be a multiple of num_key_value_heads (2)"]),
    "rope-linear": (_set(rope_scaling={"rope_type": "linear", "factor": 2}),
                    ["'rope_scaling' = {'rope_type': 'linear', 'factor': 2} is not implemented", "supported: None"]),
    "rope-parameters-linear": (
        _set(rope_parameters={"full_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1e6},
                              "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}}),
        ["rope_parameters.full_attention: 'rope_type' = 'linear' is not implemented"]),
    "head-dim-odd": (_set(head_dim=255), ["'head_dim' must be even", "255"]),
    "eps-string": (_set(rms_norm_eps="x"), ["'rms_norm_eps' must be a positive number, found 'x'"]),
    "eps-negative": (_set(rms_norm_eps=-1), ["'rms_norm_eps' must be a positive number, found -1"]),
    "eps-huge-int": (_set(rms_norm_eps=10**400), ["'rms_norm_eps' must be a positive number"]),
    "eps-nan": (_set(rms_norm_eps=float("nan")), ["'rms_norm_eps' must be a positive number, found nan"]),
    "theta-missing": (_delete("rope_theta"), ["'rope_theta' must be a positive number, found None"]),
    "vocab-missing": (_delete("vocab_size"), ["'vocab_size' must be an integer >= 1, found None"]),
    "vocab-float": (_set(vocab_size=262144.0), ["'vocab_size' must be an integer >= 1, found 262144.0"]),
    "layers-bool": (_set(num_hidden_layers=True), ["'num_hidden_layers' must be an integer >= 1, found True"]),
    "sliding-window-zero": (_set(sliding_window=0), ["'sliding_window' must be an integer >= 1, found 0"]),
}


@pytest.mark.parametrize("edit,message", CONFIG_REFUSED.values(), ids=CONFIG_REFUSED.keys())
def test_config_refused(folder, edit, message):
    edit_json(folder, "config.json", edit)
    with pytest.raises(ModelFolderError, match=words("config.json: ", *message)):
        load(folder)


def test_vocab_size_contradicts_the_embedding_table(folder):
    set_keys(folder, "config.json", vocab_size=1000)
    with pytest.raises(WeightsError, match=words(str(folder / "model.safetensors"), "tensor 'embed_tokens.weight'",
                                                 "shape [262144, 768]", "the configuration needs [1000, 768]")):
        load(folder)


def test_hidden_size_contradicts_the_pooling_config(folder):
    """hidden_size alone: the pooling config, read before any tensor, names the contradiction."""
    set_keys(folder, "config.json", hidden_size=1024)
    with pytest.raises(ModelFolderError, match=words("1_Pooling/config.json: 'word_embedding_dimension' = 768",
                                                     "contradicts config.json hidden_size = 1024")):
        load(folder)


def test_hidden_size_contradicts_the_tensors(folder):
    """hidden_size 1024 with the module configs made to agree: the tensors contradict it, both shapes named."""
    set_keys(folder, "config.json", hidden_size=1024)
    set_keys(folder, "1_Pooling/config.json", word_embedding_dimension=1024)
    set_keys(folder, "2_Dense/config.json", in_features=1024)
    with pytest.raises(WeightsError, match=words(str(folder / "model.safetensors"), "tensor 'embed_tokens.weight'",
                                                 "shape [262144, 768]", "the configuration needs [262144, 1024]")):
        load(folder)


def test_intermediate_size_contradicts_the_tensors(folder):
    set_keys(folder, "config.json", intermediate_size=2048)
    message = (r"tensor 'layers\.0\.mlp\.(gate|up|down)_proj\.weight' has shape "
               r"\[(1152, 768|768, 1152)\], the configuration needs \[(2048, 768|768, 2048)\]")
    with pytest.raises(WeightsError, match=message):
        load(folder)


def test_fewer_layers_than_the_tensors(folder):
    edit_json(folder, "config.json", _set(num_hidden_layers=23))
    edit_json(folder, "config.json", _layer_types(lambda t: t[:23]))
    with pytest.raises(WeightsError, match=words("unexpected tensor 'layers.23.", "the configuration does not use it")):
        load(folder)


def test_more_layers_than_the_tensors(folder):
    edit_json(folder, "config.json", _set(num_hidden_layers=25))
    edit_json(folder, "config.json", _layer_types(lambda t: t + ["full_attention"]))
    with pytest.raises(WeightsError, match=words("tensor 'layers.24.input_layernorm.weight' is missing",
                                                 "expected shape [768]")):
        load(folder)


# ------------------------------------------------------------------------------------------------ pooling
POOL = "1_Pooling/config.json"


@pytest.mark.parametrize("mode", ["pooling_mode_cls_token", "pooling_mode_max_tokens", "pooling_mode_lasttoken",
                                  "pooling_mode_mean_sqrt_len_tokens", "pooling_mode_weightedmean_tokens"])
def test_pooling_mode_added(folder, mode):
    set_keys(folder, POOL, **{mode: True})
    with pytest.raises(ModelFolderError, match=words(f"{POOL}: '{mode}' = True is not implemented",
                                                     "only mean pooling")):
        load(folder)


@pytest.mark.parametrize("mode", ["pooling_mode_cls_token", "pooling_mode_max_tokens", "pooling_mode_lasttoken"])
def test_pooling_mode_instead_of_mean(folder, mode):
    set_keys(folder, POOL, **{mode: True, "pooling_mode_mean_tokens": False})
    with pytest.raises(ModelFolderError, match=words(f"{POOL}: 'pooling_mode_mean_tokens' = False is not implemented",
                                                     "only mean pooling")):
        load(folder)


@pytest.mark.parametrize("mode", ["cls", "max", "lasttoken"])
def test_pooling_mode_string(folder, mode):  # sentence-transformers 6 writes one string
    write_json(folder, POOL, {"embedding_dimension": 768, "pooling_mode": mode, "include_prompt": True})
    with pytest.raises(ModelFolderError, match=words(f"{POOL}: 'pooling_mode' = '{mode}' is not implemented",
                                                     "supported: 'mean'")):
        load(folder)


def test_include_prompt_false(folder):
    set_keys(folder, POOL, include_prompt=False)
    with pytest.raises(ModelFolderError, match=words(f"{POOL}: 'include_prompt' = False is not implemented",
                                                     "prompt tokens are always included")):
        load(folder)


def test_word_embedding_dimension_wrong(folder):
    set_keys(folder, POOL, word_embedding_dimension=512)
    with pytest.raises(ModelFolderError, match=words(f"{POOL}: 'word_embedding_dimension' = 512 contradicts "
                                                     "config.json hidden_size = 768")):
        load(folder)


# ------------------------------------------------------------------------------------------------ Dense
@pytest.mark.parametrize("rel", ["2_Dense/config.json", "3_Dense/config.json"])
def test_dense_activation_tanh(folder, rel):
    set_keys(folder, rel, activation_function=DENSE_TANH)
    message = words(f"{rel}: 'activation_function' = '{DENSE_TANH}' is not implemented",
                    "torch.nn.modules.linear.Identity")
    with pytest.raises(ModelFolderError, match=message):
        load(folder)


@pytest.mark.parametrize("rel", ["2_Dense/config.json", "3_Dense/config.json"])
def test_dense_bias(folder, rel):
    set_keys(folder, rel, bias=True)
    with pytest.raises(ModelFolderError, match=words(f"{rel}: 'bias' = True is not implemented", "no bias")):
        load(folder)


@pytest.mark.parametrize("rel,value,previous", [("2_Dense/config.json", 1024, 768), ("3_Dense/config.json", 768, 3072)])
def test_dense_in_features_wrong(folder, rel, value, previous):
    set_keys(folder, rel, in_features=value)
    with pytest.raises(ModelFolderError, match=words(f"{rel}: 'in_features' = {value} but the previous stage gives "
                                                     f"{previous}")):
        load(folder)


def test_dense_out_features_contradict_the_tensor(folder):
    set_keys(folder, "2_Dense/config.json", out_features=1024)
    set_keys(folder, "3_Dense/config.json", in_features=1024)
    with pytest.raises(WeightsError, match=words(str(folder / "2_Dense" / "model.safetensors"),
                                                 "tensor 'linear.weight' has shape [3072, 768]",
                                                 "the configuration needs [1024, 768]")):
        load(folder)


# ------------------------------------------------------------------------------------------------ modules.json
def _module(i, name, path=None):
    return {"idx": i, "name": str(i), "path": path if path is not None else f"{i}_{name}",
            "type": f"sentence_transformers.models.{name}"}


def test_modules_layer_norm_instead_of_normalize(folder):
    edit_json(folder, "modules.json", lambda m: m[:4] + [_module(4, "LayerNorm")])
    with pytest.raises(ModelFolderError, match=words("modules.json: module '4' of type "
                                                     "'sentence_transformers.models.LayerNorm' is not implemented",
                                                     "Dense..., then Normalize")):
        load(folder)


def test_modules_layer_norm_between_dense_and_normalize(folder):
    edit_json(folder, "modules.json", lambda m: m[:4] + [_module(4, "LayerNorm"), {**m[4], "idx": 5}])
    with pytest.raises(ModelFolderError, match=words("modules.json: module '4' of type "
                                                     "'sentence_transformers.models.LayerNorm' is not implemented")):
        load(folder)


def test_modules_weighted_layer_pooling(folder):
    edit_json(folder, "modules.json", lambda m: [m[0], _module(1, "WeightedLayerPooling")] + m[2:])
    with pytest.raises(ModelFolderError, match=words("modules.json: the second module must be Pooling",
                                                     "WeightedLayerPooling")):
        load(folder)


def test_modules_foreign_transformer(folder):
    edit_json(folder, "modules.json", lambda m: [_module(0, "StaticEmbedding", path="")] + m[1:])
    with pytest.raises(ModelFolderError, match=words("modules.json: the first module must be the Transformer",
                                                     "StaticEmbedding")):
        load(folder)


def test_modules_empty(folder):
    write_json(folder, "modules.json", [])
    with pytest.raises(ModelFolderError, match=words("modules.json: the first module must be the Transformer",
                                                     "found []")):
        load(folder)


@pytest.mark.parametrize("index", [1, 2, 3])
@pytest.mark.parametrize("path", [None, "", 5], ids=["missing", "empty", "int"])
def test_modules_path_of_a_module_missing(folder, index, path):
    def edit(m):
        if path is None:
            del m[index]["path"]
        else:
            m[index]["path"] = path
    edit_json(folder, "modules.json", edit)
    name = read_json(folder, "modules.json")[index]["name"]
    with pytest.raises(ModelFolderError, match=words(f"modules.json: module '{name}'", "'path'", "folder")):
        load(folder)


# ------------------------------------------------------------------------------------------------ sentence-transformers
def test_max_seq_length_above_max_position_embeddings(folder):
    set_keys(folder, "sentence_bert_config.json", max_seq_length=4096)
    with pytest.raises(ModelFolderError, match=words("sentence_bert_config.json: 'max_seq_length' = 4096 exceeds "
                                                     "config.json max_position_embeddings = 2048")):
        load(folder)


def test_do_lower_case(folder):
    set_keys(folder, "sentence_bert_config.json", do_lower_case=True)
    with pytest.raises(ModelFolderError, match=words("sentence_bert_config.json: 'do_lower_case' = True "
                                                     "is not implemented")):
        load(folder)


@pytest.mark.parametrize("value", [5, None, ["task: "], {"a": "b"}])
def test_prompt_not_a_string(folder, value):
    edit_json(folder, "config_sentence_transformers.json", lambda c: c["prompts"].update(STS=value))
    with pytest.raises(ModelFolderError, match=words("config_sentence_transformers.json: prompt 'STS' must be a "
                                                     f"string, found {value!r}")):
        load(folder)


@pytest.mark.parametrize("value", [["query"], "task: ", 3])
def test_prompts_not_a_dict(folder, value):
    set_keys(folder, "config_sentence_transformers.json", prompts=value)
    with pytest.raises(ModelFolderError, match=words("config_sentence_transformers.json: 'prompts' must map names "
                                                     "to strings", f"found {value!r}")):
        load(folder)


@pytest.mark.parametrize("value", ["nope", ["query"], 3])
def test_default_prompt_name_not_among_prompts(folder, value):
    set_keys(folder, "config_sentence_transformers.json", default_prompt_name=value)
    with pytest.raises(ModelFolderError, match=words("config_sentence_transformers.json: 'default_prompt_name' = "
                                                     f"{value!r} is not one of the prompts", "query, document")):
        load(folder)


def test_default_prompt_name_among_prompts_is_used(folder):
    """The control for the case above: a default prompt that exists is accepted."""
    set_keys(folder, "config_sentence_transformers.json", default_prompt_name="query")
    assert load(folder).resolve_prompt() == "task: search result | query: "


# ------------------------------------------------------------------------------------------------ pickles
def hostile_payload(marker: Path, kind: str) -> bytes:
    """A checkpoint whose unpickling would create marker. kind: torch-zip, torch-legacy, pickle-2, pickle-5."""
    import io

    import torch

    obj = {"embed_tokens.weight": Hostile(marker), "layers.0.input_layernorm.weight": torch.zeros(4)}
    if kind.startswith("pickle-"):
        return pickle.dumps(obj, protocol=int(kind[-1]))
    buf = io.BytesIO()
    torch.save(obj, buf, _use_new_zipfile_serialization=(kind == "torch-zip"))
    return buf.getvalue()


KINDS = ["torch-zip", "torch-legacy", "pickle-2", "pickle-5"]


@pytest.mark.parametrize("kind", KINDS)
def test_hostile_payload_is_hostile(tmp_path, kind):
    """The control: unpickling these payloads really does run code (so the tests below mean something)."""
    import io

    import torch

    marker = tmp_path / "ran"
    data = hostile_payload(marker, kind)
    assert data[:2] == b"PK" if kind == "torch-zip" else data[:1] == b"\x80"
    if kind.startswith("pickle-"):
        pickle.loads(data)
    else:
        torch.load(io.BytesIO(data), weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("name", ["pytorch_model.bin", "model.pt", "model.pth"])
@pytest.mark.parametrize("kind", ["torch-zip", "torch-legacy"])
def test_pickle_checkpoint_instead_of_safetensors(folder, tmp_path, name, kind):
    marker = tmp_path / "ran"
    remove_file(folder, "model.safetensors")
    write_file(folder, name, hostile_payload(marker, kind))
    with pytest.raises(WeightsError, match=words(str(folder / name), "never unpickles",
                                                 "Expected model.safetensors", "convert")):
        load(folder)
    assert not marker.exists()


@pytest.mark.parametrize("rel", ["model.safetensors", "2_Dense/model.safetensors", "3_Dense/model.safetensors"])
@pytest.mark.parametrize("kind", KINDS)
def test_safetensors_file_that_is_a_pickle(folder, tmp_path, rel, kind):
    marker = tmp_path / "ran"
    write_file(folder, rel, hostile_payload(marker, kind))
    with pytest.raises(WeightsError, match=words(str(folder / rel), "pickle", "not safetensors",
                                                 "never unpickles")):
        load(folder)
    assert not marker.exists()


def test_no_weights_at_all(folder):
    """No safetensors and no pickle: the plain missing-file error (no pickle named)."""
    remove_file(folder, "model.safetensors")
    with pytest.raises(FileNotFoundError, match=words(str(folder / "model.safetensors"), "missing")):
        load(folder)
