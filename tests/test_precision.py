"""bfloat16 emulation against a torch bfloat16 run, and where float16 overflows."""

import numpy as np
import pytest

from gemma_np import EmbeddingGemma
from gemma_np.nn.sentence import pad_batch
from gemma_np.verify.parity.compare import compare
from gemma_np.verify.parity.precision import BFloat16Emulation, bfloat16_weights, float16_report, round_to_bfloat16
from gemma_np.verify.probes import DOC_PROMPT, text_of_length
from gemma_np.verify.runtimes.judge import CLOSE

from support_bounds import assert_above, assert_below

torch = pytest.importorskip("torch")


def test_bfloat16_rounding_is_torchs_bit_for_bit():
    rng = np.random.default_rng(0)
    x = (rng.normal(size=200_000) * 10.0 ** rng.integers(-30, 30, 200_000)).astype(np.float32)
    x[:4] = [np.inf, -np.inf, 0.0, -0.0]
    want = torch.from_numpy(x).to(torch.bfloat16).float().numpy()
    np.testing.assert_array_equal(round_to_bfloat16(x), want)


@pytest.fixture(scope="module")
def setup(real_dir):
    model = EmbeddingGemma.from_pretrained(real_dir)
    ids, _ = model.tokenize([DOC_PROMPT + text_of_length(real_dir, 300)])
    return model, *pad_batch(ids)


@pytest.mark.real
def test_bfloat16_emulation_follows_torch_bfloat16(setup, real_dir):
    from gemma_np.verify.parity.torch_trace import TorchReference

    model, input_ids, mask = setup
    reference = TorchReference(real_dir, dtype="bfloat16", threads=2).trace(input_ids, mask, attention_maps=False)
    ours = BFloat16Emulation()
    bfloat16_weights(model).forward(input_ids, mask, trace=ours)
    rows = {r.name: r for r in compare(ours, reference, mask, list(reference), tolerances=None)}
    # Up to the rotary embedding torch rounds where the emulation does: nearly every value is the same
    # bfloat16 number (a float32 forward matches almost none), the rest one rounding apart where the
    # float32 sums of a matmul landed on either side of a rounding boundary.
    real = mask.astype(bool)
    for name in ("embed_tokens", "layers.0.input_layernorm", "layers.0.self_attn.q_proj",
                 "layers.0.self_attn.k_proj", "layers.0.self_attn.v_proj", "layers.0.self_attn.q_norm"):
        same = np.mean(ours[name][real] == reference[name][real])
        assert same > 0.99, (name, same)
        assert rows[name].max_rel <= 2.0 ** -8, (name, rows[name].max_rel)
    # After it, bfloat16 noise: two bfloat16 forwards each within the precision level of float32 (cosine
    # CLOSE, docs/tolerances.md); per coordinate of a unit vector, a few bfloat16 spacings: 5e-3 ~ 1.3 u_bf16.
    assert_above("precision: bfloat16 emulation against torch bfloat16, cosine", rows["sentence_embedding"].cosine,
                 CLOSE)
    assert_below("precision: bfloat16 emulation against torch bfloat16, max abs", rows["sentence_embedding"].max_abs,
                 5e-3)


@pytest.mark.real
def test_float16_overflows_first_in_layer_22(setup):
    model, input_ids, mask = setup
    report = float16_report(model, input_ids, mask)
    assert report.first == "layers.22.output"
    assert report["layers.21.output"] < 65504 < report["layers.22.output"]
