"""The Gato transformer as pure computation: config, parameter counts, causality, masked loss, KV cache."""

from __future__ import annotations

import pytest
import torch

from gato_robot.core import vocab
from gato_robot.model.config import PRESETS, GatoConfig, count_parameters, main, preset
from gato_robot.model.embedding import GatoInputs
from gato_robot.model.gato import Gato
from gato_robot.model.kv_cache import attention_mask, banded_causal_mask, capacity_for, slot_positions, write_slots
from gato_robot.model.sampling import restrict, sample_in_range

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ATOL = 1e-5


def random_inputs(b: int, t: int, seed: int = 0) -> GatoInputs:
    g = torch.Generator().manual_seed(seed)
    is_image = torch.rand(b, t, generator=g) < 0.4
    return GatoInputs(
        tokens=torch.randint(0, vocab.VOCAB_SIZE, (b, t), generator=g),
        patches=(torch.rand(b, t, vocab.PATCH_PIXELS, generator=g) - 0.5) * 0.5 * is_image.unsqueeze(-1),
        patch_row=torch.randint(0, 128, (b, t), generator=g),
        patch_col=torch.randint(0, 128, (b, t), generator=g),
        local_pos=torch.randint(0, 512, (b, t), generator=g),
        is_image=is_image,
    )


def tiny_model(**overrides) -> Gato:
    torch.manual_seed(0)
    return Gato(preset("tiny", **overrides)).eval()


def changed_at(x: GatoInputs, b: int, t: int) -> GatoInputs:
    """x with token (b, t) replaced: a new id, patch, patch positions and local position."""
    y = GatoInputs(*(f.clone() for f in x))
    y.tokens[b, t] = (x.tokens[b, t] + 1234) % vocab.VOCAB_SIZE
    y.patches[b, t] = -x.patches[b, t] + 0.1
    y.patch_row[b, t] = (x.patch_row[b, t] + 7) % 128
    y.local_pos[b, t] = (x.local_pos[b, t] + 3) % 512
    return y


# -- config ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "target"), [("79M", 79e6), ("364M", 364e6), ("1.18B", 1.18e9)])
def test_paper_presets_have_paper_shapes_and_counts(name, target):
    cfg = PRESETS[name]
    assert cfg.context == 1024 and cfg.vocab_size == vocab.VOCAB_SIZE
    n = count_parameters(cfg)  # meta device: no memory, fast
    assert abs(n - target) / target < 0.10, f"{name}: {n:,} parameters"


def test_paper_preset_shapes():
    shapes = {k: (c.n_layer, c.d_model, c.d_ff, c.n_head, c.head_dim) for k, c in PRESETS.items()}
    assert shapes["79M"] == (8, 768, 3072, 24, 32)
    assert shapes["364M"] == (12, 1536, 6144, 12, 128)
    assert shapes["1.18B"] == (24, 2048, 8192, 16, 128)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"n_head": 5}, "not divisible by n_head"),
        ({"patch_channels": 48}, "multiple of 32"),
        ({"dropout": 1.0}, "dropout"),
        ({"n_layer": 0}, "positive integer"),
        ({"vocab_size": 1000}, "smaller than the tokenizer"),
        ({"local_positions": 100}, "local_positions"),
    ],
)
def test_config_rejects_bad_values_with_actionable_message(changes, message):
    with pytest.raises(ValueError, match=message):
        preset("tiny", **changes)


def test_config_dict_round_trip_and_unknown_fields():
    cfg = preset("small", dropout=0.1)
    assert GatoConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown GatoConfig fields"):
        GatoConfig.from_dict({**cfg.to_dict(), "n_embd": 3})
    with pytest.raises(ValueError, match="unknown model preset"):
        preset("huge")


def test_config_cli_prints_every_preset(capsys):
    assert main(["tiny", "79M"]) == 0
    out = capsys.readouterr().out
    assert "tiny" in out and "79M" in out and "M)" in out


# -- full forward ---------------------------------------------------------------------------------------------
def test_forward_shapes_and_finite():
    m = tiny_model()
    out = m(random_inputs(2, 20))
    assert out.logits.shape == (2, 20, vocab.VOCAB_SIZE) and out.loss is None
    assert torch.isfinite(out.logits).all()


@pytest.mark.parametrize("window", [None, 6])
def test_causality_later_tokens_never_change_earlier_logits(window):
    m = tiny_model()
    x = random_inputs(2, 24)
    t = 13
    with torch.no_grad():
        a = m(x, window=window).logits
        b = m(changed_at(x, 1, t), window=window).logits
    torch.testing.assert_close(a[:, :t], b[:, :t], atol=ATOL, rtol=0)
    assert (a[1, t] - b[1, t]).abs().max() > 1e-4  # the change is visible where it may be
    torch.testing.assert_close(a[0], b[0], atol=ATOL, rtol=0)  # other sequences of the batch untouched


def test_window_limits_how_far_back_a_token_sees():
    m = tiny_model()  # 2 layers: token 3 reaches query 7 in layer 1, and through it query 11 in layer 2
    x = random_inputs(1, 20)
    with torch.no_grad():
        a = m(x, window=5).logits
        b = m(changed_at(x, 0, 3), window=5).logits
    assert (a[0, 3:12] - b[0, 3:12]).abs().amax(-1).min() > 1e-6
    torch.testing.assert_close(a[0, 12:], b[0, 12:], atol=ATOL, rtol=0)  # receptive field: n_layer * (window - 1)


def test_image_positions_use_patches_not_token_ids():
    m = tiny_model()
    x = random_inputs(1, 16)
    img = x.is_image[0].nonzero().flatten()
    assert len(img) > 0
    y = GatoInputs(*(f.clone() for f in x))
    y.tokens[0, img] = 7  # ids at image positions are ignored
    with torch.no_grad():
        torch.testing.assert_close(m(x).logits, m(y).logits, atol=0, rtol=0)
        y.patches[0, img[0]] += 0.05  # the pixels are not, even a uniform brightness shift (GroupNorm cancels
        # per-group means: the block must keep them on its identity path)
        assert (m(x).logits - m(y).logits).abs().max() > 1e-5


def test_training_embeds_only_image_positions_and_matches_the_dense_eval_path():
    m = tiny_model()
    x = random_inputs(3, 20, seed=4)
    with torch.no_grad():
        dense = m.embed(x)  # eval: the patch block over every position (what the ONNX export traces)
        m.train()
        sparse = m.embed(x)  # training: only where is_image
        m.eval()
    torch.testing.assert_close(sparse, dense, atol=0, rtol=0)
    m.train()
    m(x, torch.ones(3, 20, dtype=torch.bool), return_logits=False).loss.backward()  # gradients flow through it
    assert m.embed.patch.stem.weight.grad.abs().sum() > 0


# -- masked loss ----------------------------------------------------------------------------------------------
def test_loss_counts_only_masked_valid_targets():
    m = tiny_model()
    x = random_inputs(2, 24)
    loss_mask = torch.zeros(2, 24, dtype=torch.bool)
    loss_mask[:, [5, 9, 10, 20]] = True
    valid = torch.ones(2, 24, dtype=torch.bool)
    valid[1, 18:] = False  # padding: target 20 of sequence 1 does not count
    with torch.no_grad():
        out = m(x, loss_mask, valid)
        # by hand: logits at t predict tokens[t + 1]
        terms = [torch.nn.functional.cross_entropy(out.logits[b, t - 1], x.tokens[b, t], reduction="sum")
                 for b in range(2) for t in (5, 9, 10, 20) if valid[b, t]]
        torch.testing.assert_close(out.loss, torch.stack(terms).mean(), atol=1e-5, rtol=1e-5)
        # the logits-free path gives the same loss
        torch.testing.assert_close(m(x, loss_mask, valid, return_logits=False).loss, out.loss, atol=1e-6, rtol=1e-6)


def test_changing_a_masked_out_target_changes_nothing():
    m = tiny_model()
    x = random_inputs(1, 24)
    x.is_image.zero_()  # all tokens are ids, so changing one is a real change of the target
    loss_mask = torch.zeros(1, 24, dtype=torch.bool)
    loss_mask[0, 10:15] = True
    with torch.no_grad():
        base = m(x, loss_mask).loss
        # every token after the last counted target: masked out, and causality keeps them from the targets
        y = GatoInputs(*(f.clone() for f in x))
        y.tokens[0, 15:] = (x.tokens[0, 15:] + 99) % vocab.VOCAB_SIZE
        torch.testing.assert_close(m(y, loss_mask).loss, base, atol=1e-6, rtol=0)
        y.is_image[0, 15:] = True  # even turned into image patches
        torch.testing.assert_close(m(y, loss_mask).loss, base, atol=1e-6, rtol=0)
        # a counted target changes the loss
        y.tokens[0, 12] = (x.tokens[0, 12] + 99) % vocab.VOCAB_SIZE
        assert (m(y, loss_mask).loss - base).abs() > 1e-4


def test_loss_without_targets_is_zero_not_nan():
    m = tiny_model()
    loss = m(random_inputs(1, 8), torch.zeros(1, 8, dtype=torch.bool), return_logits=False).loss
    assert loss.item() == 0.0


def test_loss_backpropagates_to_every_parameter():
    m = tiny_model()
    x = random_inputs(2, 16)
    m(x, torch.ones(2, 16, dtype=torch.bool), return_logits=False).loss.backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


# -- KV cache -------------------------------------------------------------------------------------------------
def test_ring_slots_and_mask_arithmetic():
    pos = torch.tensor(6)  # append tokens 6 and 7 to a 5-slot cache with a 4-token window (max_append 2)
    assert capacity_for(4, 2) == 5
    assert write_slots(pos, 2, 5).tolist() == [1, 2]
    assert slot_positions(pos, 2, 5).tolist() == [5, 6, 7, 3, 4]  # after the write
    assert slot_positions(torch.tensor(0), 1, 3).tolist() == [0, -2, -1]
    mask = attention_mask(pos, 2, 5, window=4)
    # query 6 sees 3, 4, 5 and itself; query 7 sees 4, 5, 6 and itself
    assert mask.int().tolist() == [[1, 1, 0, 1, 1], [1, 1, 1, 0, 1]]
    assert banded_causal_mask(4, 2).tolist() == [[1, 0, 0, 0], [1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1]]


@pytest.mark.parametrize(
    ("chunks", "max_append"), [([1] * 40, 1), ([5, 1, 1, 16, 3, 1, 7, 6], 16), ([16, 16, 8], 16), ([20, 20], 20)]
)
def test_cached_decoding_equals_full_forward_across_window_slide(chunks, max_append):
    window = 16
    m = tiny_model(context=window)
    x = random_inputs(2, sum(chunks), seed=3)
    with torch.no_grad():
        full = m(x, window=window).logits  # the reference: each query sees the last 16 tokens
        cache = m.empty_cache(batch=2, max_append=max_append)
        t = 0
        for n in chunks:
            logits, cache = m.forward_cached(GatoInputs(*(f[:, t : t + n] for f in x)), cache)
            t += n
            torch.testing.assert_close(logits, full[:, t - 1], atol=ATOL, rtol=1e-4)
        assert int(cache.pos) == t > 2 * window  # the window slid more than once
        # the head restricted to a range of ids gives those logits
        y = random_inputs(2, 1, seed=4)
        lo, hi = vocab.BIN_OFFSET, vocab.SEPARATOR
        sliced, _ = m.forward_cached(y, cache.clone(), logits_ids=(lo, hi))
        whole, _ = m.forward_cached(y, cache.clone())
        torch.testing.assert_close(sliced, whole[:, lo:hi], atol=ATOL, rtol=0)


def test_cache_rejects_a_chunk_larger_than_it_was_made_for():
    m = tiny_model(context=8)
    with pytest.raises(ValueError, match="max_append=5"):
        m.forward_cached(random_inputs(1, 5), m.empty_cache(max_append=4))


# -- sampling -------------------------------------------------------------------------------------------------
def test_sampling_stays_in_range():
    logits = torch.randn(3, vocab.VOCAB_SIZE)
    logits[:, 5] = 100.0  # the global argmax is a text id, outside the range
    lo, hi = vocab.BIN_OFFSET, vocab.BIN_OFFSET + 10
    greedy = sample_in_range(logits, lo, hi)
    assert torch.equal(greedy, logits[:, lo:hi].argmax(-1) + lo)
    g = torch.Generator().manual_seed(0)
    hot = torch.stack([sample_in_range(logits, lo, hi, temperature=2.0, generator=g) for _ in range(50)])
    assert ((hot >= lo) & (hot < hi)).all() and hot.unique().numel() > 1
    masked = restrict(logits, lo, hi)
    assert torch.isinf(masked[:, :lo]).all() and torch.isfinite(masked[:, lo:hi]).all()
    with pytest.raises(ValueError, match="empty or outside"):
        sample_in_range(logits, 10, 10)
    with pytest.raises(ValueError, match="temperature"):
        sample_in_range(logits, lo, hi, temperature=-1.0)
