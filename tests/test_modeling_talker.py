"""The talker (`MuOmniTalkerForConditionalGeneration`).

References: perturbation of later frames (causality and the one shift), a hand-made cross-entropy
against hand-shifted targets (loss), uncached full forward passes (KV cache), one-by-one runs
(batching), the unbiased greedy trajectory's end-of-speech margins (stopping), and a model overfit
on two utterances (training and inference agree).
"""

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModel

from muomni import MuOmniTalkerConfig, MuOmniTalkerForConditionalGeneration
from muomni.modeling_talker import MuOmniTalkerGenerateOutput

TINY_TALKER_CONFIG = {
    "hidden_size": 24,
    "intermediate_size": 37,
    "num_hidden_layers": 2,
    "num_attention_heads": 3,
    "num_key_value_heads": 1,
    "thinker_hidden_size": 20,
    "codebook_size": 11,
    "num_quantizers": 2,
    "max_text_tokens": 8,
    "max_frames_per_token": 2,
    "min_frames_guard": 3,
    "max_position_embeddings": 32,  # 8 text + BOS + 19 frames fit
    # large enough that a random model's greedy frames vary from step to step
    "initializer_range": 0.2,
}
K, EOS, WIDTH = 11, 11, 20
ATOL = 1e-5


def make_talker(seed: int = 0, **overrides) -> MuOmniTalkerForConditionalGeneration:
    torch.manual_seed(seed)
    return MuOmniTalkerForConditionalGeneration(MuOmniTalkerConfig(**{**TINY_TALKER_CONFIG, **overrides})).eval()


def texts(lengths, seed: int = 1) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(length, WIDTH, generator=generator) for length in lengths]


def left_pad(items: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, L, Dt) embeddings and (B, L) mask; pads hold large garbage that must be ignored."""
    length = max(len(item) for item in items)
    embeds = torch.full((len(items), length, WIDTH), 1e3)
    mask = torch.zeros(len(items), length, dtype=torch.long)
    for row, item in enumerate(items):
        embeds[row, length - len(item) :] = item
        mask[row, length - len(item) :] = 1
    return embeds, mask


def random_codes(batch: int, num_quantizers: int, frames: int, seed: int = 2) -> torch.Tensor:
    return torch.randint(0, K, (batch, num_quantizers, frames), generator=torch.Generator().manual_seed(seed))


def forward_logits(model, text_embeds, codes, **kwargs) -> torch.Tensor:
    with torch.no_grad():
        return model(text_embeds, codes, **kwargs).logits


def changed(codes: torch.Tensor) -> torch.Tensor:
    """Every code replaced by a different one."""
    return (codes + 1 + codes % 3) % K


# --- (a) alignment: frame t is predicted from frames < t, the text, and codes < q of frame t ---------


@pytest.mark.parametrize("num_quantizers", [2, 3])
@pytest.mark.parametrize("t", [0, 2, 4])
def test_logits_for_frame_t_do_not_see_frames_from_t_on(num_quantizers, t):
    model = make_talker(num_quantizers=num_quantizers)
    text, codes = texts([4])[0][None], random_codes(1, num_quantizers, 6)
    logits = forward_logits(model, text, codes)  # (1, Nq, 7, K + 1)
    perturbed = codes.clone()
    perturbed[:, :, t:] = changed(codes[:, :, t:])
    new = forward_logits(model, text, perturbed)

    torch.testing.assert_close(new[:, 0, : t + 1], logits[:, 0, : t + 1], atol=ATOL, rtol=0)
    torch.testing.assert_close(new[:, :, :t], logits[:, :, :t], atol=ATOL, rtol=0)
    assert not torch.allclose(new[:, 0, t + 1], logits[:, 0, t + 1], atol=1e-3)  # frame t is input for t + 1


def test_codebook_q_logits_see_the_earlier_codes_of_their_frame_only():
    model = make_talker(num_quantizers=3)
    text, codes, t = texts([5])[0][None], random_codes(1, 3, 5), 2
    logits = forward_logits(model, text, codes)
    for q in range(3):
        perturbed = codes.clone()
        perturbed[:, q, t] = changed(codes[:, q, t])
        new = forward_logits(model, text, perturbed)
        # codebooks 0..q of frame t (and everything before it) do not move
        torch.testing.assert_close(new[:, : q + 1, : t + 1], logits[:, : q + 1, : t + 1], atol=ATOL, rtol=0)
        torch.testing.assert_close(new[:, :, :t], logits[:, :, :t], atol=ATOL, rtol=0)
        for later in range(q + 1, 3):  # codebooks after q of frame t do
            assert not torch.allclose(new[:, later, t], logits[:, later, t], atol=1e-3)


def test_talker_sees_the_text_and_ignores_its_padding():
    model = make_talker()
    text, codes = texts([5])[0][None], random_codes(1, 2, 4)
    logits = forward_logits(model, text, codes)
    noise = 0.5 * torch.randn(text.shape, generator=torch.Generator().manual_seed(3))
    other = forward_logits(model, text + noise, codes)
    assert (other - logits)[:, 0].abs().amax(-1).min() > 1e-3  # every step, codebook 0 included, moves

    padded = torch.cat([torch.full((1, 3, WIDTH), -7.0), text], dim=1)
    mask = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 1]])
    padded_logits = forward_logits(model, padded, codes, text_attention_mask=mask)
    torch.testing.assert_close(padded_logits, logits, atol=ATOL, rtol=0)


# --- (b) loss ----------------------------------------------------------------------------------


@pytest.mark.parametrize("weights", [None, [3.0, 1.0]])
def test_loss_is_cross_entropy_against_once_shifted_targets(weights):
    model = make_talker(codebook_loss_weights=weights)
    text_embeds, text_mask = left_pad(texts([3, 6, 2]))
    codes = random_codes(3, 2, 5)
    frames = torch.tensor([5, 2, 0])  # right padding; the third item is silence: end of speech at once
    codes_mask = (torch.arange(5) < frames[:, None]).long()
    codes_with_garbage = codes.masked_fill(codes_mask[:, None] == 0, -100)  # padded codes are ignored
    out = model(text_embeds, codes_with_garbage, text_attention_mask=text_mask, codes_mask=codes_mask)
    assert out.logits.shape == (3, 2, 6, K + 1)
    assert (out.logits[:, 1, :, EOS] == torch.finfo(out.logits.dtype).min).all()  # codebook 1 has no end of speech

    per_codebook = []
    for q in range(2):
        logits, targets = [], []
        for b, n in enumerate(frames.tolist()):
            # step s predicts frame s; the step after the last frame predicts end of speech (codebook 0 only)
            target = codes[b, q, :n].tolist() + ([EOS] if q == 0 else [])
            logits.append(out.logits[b, q, : len(target)])
            targets += target
        per_codebook.append(F.cross_entropy(torch.cat(logits), torch.tensor(targets)))
    expected = torch.stack(per_codebook)
    torch.testing.assert_close(out.codebook_losses, expected)
    w = torch.tensor(weights or [1.0, 1.0])
    torch.testing.assert_close(out.loss, (w * expected).sum() / w.sum())


def test_padded_batch_forward_matches_single_items():
    model = make_talker()
    items, frames = texts([3, 6]), [4, 2]
    codes = random_codes(2, 2, 4)
    text_embeds, text_mask = left_pad(items)
    codes_mask = (torch.arange(4) < torch.tensor(frames)[:, None]).long()
    batch = forward_logits(model, text_embeds, codes, text_attention_mask=text_mask, codes_mask=codes_mask)
    for b, (item, n) in enumerate(zip(items, frames)):
        single = forward_logits(model, item[None], codes[b : b + 1, :, :n])
        torch.testing.assert_close(batch[b : b + 1, :, : n + 1], single, atol=ATOL, rtol=0)


# --- (c) KV cache ------------------------------------------------------------------------------


def uncached_greedy(model, text: torch.Tensor, max_frames: int) -> torch.Tensor:
    """Greedy frames by re-running the full forward on the growing sequence: step t's codebook-0 logits
    are `logits[:, 0, t]`; codebook q's come from a forward whose frame t holds the codes 0..q-1 drawn."""
    codes = torch.zeros(1, model.config.num_quantizers, 0, dtype=torch.long)
    for t in range(max_frames):
        frame = torch.zeros(1, model.config.num_quantizers, 1, dtype=torch.long)
        frame[0, 0, 0] = forward_logits(model, text, codes)[0, 0, t].argmax()
        if frame[0, 0, 0] == EOS:
            break
        for q in range(1, model.config.num_quantizers):
            frame[0, q, 0] = forward_logits(model, text, torch.cat([codes, frame], -1))[0, q, t, :K].argmax()
        codes = torch.cat([codes, frame], dim=-1)
    return codes


@pytest.mark.parametrize("num_quantizers", [2, 3])
def test_cached_generation_matches_uncached_forward(num_quantizers):
    model = make_talker(num_quantizers=num_quantizers)
    model.codebook_heads[0].bias.data[EOS] -= 1.0  # longer utterances: a stronger comparison
    for text_len in (2, 5):
        text = texts([text_len], seed=text_len)[0][None]
        generated = model.generate(text)
        expected = uncached_greedy(model, text, model.config.max_frames(text_len))
        assert generated.lengths.tolist() == [expected.shape[-1]] and expected.shape[-1] >= 3
        torch.testing.assert_close(generated.codes, expected, atol=0, rtol=0)


# --- (d) stopping ------------------------------------------------------------------------------


def test_generation_stops_at_end_of_speech():
    model = make_talker()
    text_embeds, text_mask = left_pad(texts([3, 7]))
    guards = [model.config.max_frames(3), model.config.max_frames(7)]  # 9, 17
    eos_bias = model.codebook_heads[0].bias.data

    # the greedy trajectory with end of speech forbidden, and its end-of-speech margins
    eos_bias[EOS] -= 1e4
    never = model.generate(text_embeds, text_mask)
    assert never.lengths.tolist() == guards and never.codes.shape[-1] == max(guards)  # the guard holds
    eos_bias[EOS] += 1e4
    logits = forward_logits(
        model, text_embeds, never.codes, text_attention_mask=text_mask,
        codes_mask=(torch.arange(max(guards)) < torch.tensor(guards)[:, None]).long(),
    )[:, 0]  # fmt: skip
    margin = logits[..., :EOS].amax(-1) - logits[..., EOS]  # (B, T + 1): end of speech wins where bias > margin

    # a bias that first lets end of speech win at a later record low of item 1's margin
    record_lows = [s for s in range(1, guards[1]) if margin[1, s] < margin[1, :s].min()]
    k = record_lows[-1]
    bias = float(margin[1, k] + margin[1, :k].min()) / 2
    expected = []
    for b, guard in enumerate(guards):
        wins = (margin[b, :guard] < bias).nonzero()
        expected.append(int(wins[0]) if len(wins) else guard)
    assert expected[1] == k > 0

    eos_bias[EOS] += bias
    out = model.generate(text_embeds, text_mask)
    assert out.lengths.tolist() == expected
    assert out.codes.shape == (2, 2, max(expected))
    for b, n in enumerate(expected):
        torch.testing.assert_close(out.codes[b, :, :n], never.codes[b, :, :n], atol=0, rtol=0)
        assert (out.codes[b, :, n:] == 0).all()  # ended items are padded with 0

    eos_bias[EOS] += 1e4  # end of speech at once: empty utterances
    out = model.generate(text_embeds, text_mask)
    assert out.lengths.tolist() == [0, 0] and out.codes.shape == (2, 2, 0)
    chunks = list(model.generate_stream(text_embeds, text_mask, chunk_frames=4))
    assert len(chunks) == 1 and chunks[0].codes.shape == (2, 2, 0) and chunks[0].lengths.tolist() == [0, 0]


def test_max_frames_overrides_the_guard():
    model = make_talker()
    model.codebook_heads[0].bias.data[EOS] -= 1e4
    text_embeds, text_mask = left_pad(texts([3, 7]))
    out = model.generate(text_embeds, text_mask, max_frames=4)
    assert out.lengths.tolist() == [4, 4] and out.codes.shape == (2, 2, 4)
    assert (out.codes == model.generate(text_embeds, text_mask).codes[:, :, :4]).all()


# --- (e) batching ------------------------------------------------------------------------------


def test_left_padded_batch_generates_what_each_item_generates_alone():
    model = make_talker()
    model.codebook_heads[0].bias.data[EOS] -= 1.0
    items = texts([2, 6], seed=4)
    batch = model.generate(*left_pad(items))
    for b, item in enumerate(items):
        single = model.generate(item[None])
        n = int(single.lengths)
        assert int(batch.lengths[b]) == n and n >= 3
        torch.testing.assert_close(batch.codes[b, :, :n], single.codes[0], atol=0, rtol=0)
        assert (batch.codes[b, :, n:] == 0).all()


# --- (f) sampling and streaming ----------------------------------------------------------------


def test_sampling_is_reproducible_and_degenerates_to_greedy():
    model = make_talker()
    text_embeds, text_mask = left_pad(texts([3, 5]))
    greedy = model.generate(text_embeds, text_mask)

    def sample(seed: int, **kwargs) -> MuOmniTalkerGenerateOutput:
        generator = torch.Generator().manual_seed(seed)
        return model.generate(text_embeds, text_mask, do_sample=True, generator=generator, **kwargs)

    first, second = sample(7, temperature=1.5, top_k=5, top_p=0.9), sample(7, temperature=1.5, top_k=5, top_p=0.9)
    assert torch.equal(first.codes, second.codes) and torch.equal(first.lengths, second.lengths)
    for kwargs in ({"top_k": 1}, {"top_p": 1e-6}, {"top_k": 1, "temperature": 3.0}):
        out = sample(11, **kwargs)
        assert torch.equal(out.codes, greedy.codes) and torch.equal(out.lengths, greedy.lengths), kwargs


@pytest.mark.parametrize("chunk_frames", [1, 2, 5])
def test_streamed_chunks_concatenate_to_generate(chunk_frames):
    model = make_talker()
    model.codebook_heads[0].bias.data[EOS] -= 1.0
    text_embeds, text_mask = left_pad(texts([2, 4]))
    full = model.generate(text_embeds, text_mask)
    chunks = list(model.generate_stream(text_embeds, text_mask, chunk_frames=chunk_frames))
    assert all(1 <= chunk.codes.shape[-1] <= chunk_frames for chunk in chunks)
    assert all(chunk.codes.shape[-1] == chunk_frames for chunk in chunks[:-1])
    assert torch.equal(torch.cat([chunk.codes for chunk in chunks], dim=-1), full.codes)
    assert torch.equal(chunks[-1].lengths, full.lengths) and full.codes.shape[-1] > chunk_frames

    class Recorder:
        def __init__(self):
            self.frames, self.ended = [], False

        def put(self, value):
            self.frames.append(value)

        def end(self):
            self.ended = True

    recorder = Recorder()
    model.generate(text_embeds, text_mask, streamer=recorder)
    assert recorder.ended and torch.equal(torch.cat(recorder.frames, dim=-1), full.codes)


# --- (g) training and inference agree ----------------------------------------------------------


def test_overfit_two_utterances_then_generate_them():
    model = make_talker(seed=3, initializer_range=0.02).train()
    text_embeds, text_mask = left_pad(texts([3, 5], seed=5))
    frames = torch.tensor([6, 4])
    codes = random_codes(2, 2, 6, seed=6)
    codes_mask = (torch.arange(6) < frames[:, None]).long()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(100):
        loss = model(text_embeds, codes, text_attention_mask=text_mask, codes_mask=codes_mask).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05

    out = model.eval().generate(text_embeds, text_mask)
    assert out.lengths.tolist() == frames.tolist()
    assert torch.equal(out.codes, codes * codes_mask[:, None])


# --- (h) errors --------------------------------------------------------------------------------

GOOD_TEXT, GOOD_MASK = left_pad(texts([3, 5]))
GOOD_CODES = random_codes(2, 2, 4)

FORWARD_ERRORS = {
    "code_too_large": ({"codes": GOOD_CODES.clone().index_fill_(2, torch.tensor([1]), K)}, ValueError,
                       r"codes of real frames must be in \[0, codebook_size=11\), got min \d+, max 11"),
    "negative_code": ({"codes": GOOD_CODES - 1}, ValueError, r"must be in \[0, codebook_size=11\), got min -1"),
    "wrong_num_quantizers": ({"codes": random_codes(2, 3, 4)}, ValueError,
                             r"codes must have shape \(batch=2, num_quantizers=2, frames\), got \(2, 3, 4\)"),
    "float_codes": ({"codes": GOOD_CODES.float()}, TypeError, r"codes must be an integer torch.Tensor, got torch.float32"),
    "codes_mask_left_padded": ({"codes_mask": torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]])}, ValueError,
                               r"codes_mask must be right-padded"),
    "codes_mask_shape": ({"codes_mask": torch.ones(2, 3)}, ValueError,
                         r"codes_mask must have shape \(2, 4\), got \(2, 3\)"),
    "text_width": ({"text_embeds": torch.randn(2, 5, 21)}, ValueError,
                   r"text_embeds must have shape \(batch, text_len, thinker_hidden_size=20\), got \(2, 5, 21\)"),
    "text_ids": ({"text_embeds": torch.ones(2, 5, 20, dtype=torch.long)}, TypeError,
                 r"text_embeds must be a floating-point torch.Tensor, got torch.int64"),
    "empty_text": ({"text_embeds": torch.randn(2, 0, 20), "text_attention_mask": None}, ValueError,
                   r"The text to speak is empty: text_embeds has 0 tokens"),
    "empty_row": ({"text_attention_mask": torch.tensor([[0, 0, 0, 0, 0], [1, 1, 1, 1, 1]])}, ValueError,
                  r"The text to speak is empty for batch items \[0\]"),
    "text_too_long": ({"text_embeds": torch.randn(2, 9, 20), "text_attention_mask": None}, ValueError,
                      r"The text to speak has 9 tokens, more than max_text_tokens \(8\)"),
    "right_padded_text": ({"text_attention_mask": GOOD_MASK.flip(-1)}, ValueError,
                          r"text_attention_mask must be left-padded"),
    "text_mask_values": ({"text_attention_mask": GOOD_MASK * 2}, ValueError,
                         r"text_attention_mask must hold only 0 \(pad\) and 1 \(real\)"),
    "text_mask_shape": ({"text_attention_mask": GOOD_MASK[:, 1:]}, ValueError,
                        r"text_attention_mask must have shape \(2, 5\), got \(2, 4\)"),
    "text_mask_list": ({"text_attention_mask": GOOD_MASK.tolist()}, TypeError,
                       r"text_attention_mask must be a torch.Tensor, got list"),
    "too_many_frames": ({"codes": random_codes(2, 2, 27)}, ValueError,
                        r"Sequence too long: text \+ BOS \+ frames needs position 32, "
                        r"beyond max_position_embeddings \(32\)"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(FORWARD_ERRORS))
def test_forward_rejects_bad_inputs(case):
    model = make_talker()
    overrides, error, match = FORWARD_ERRORS[case]
    inputs = {"text_embeds": GOOD_TEXT, "codes": GOOD_CODES, "text_attention_mask": GOOD_MASK, **overrides}
    with pytest.raises(error, match=match):
        model(**inputs)


def test_padded_codes_may_hold_anything():
    model = make_talker()
    codes_mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    garbage = GOOD_CODES.clone()
    garbage[0, :, 2:] = torch.tensor([[-100, 99], [K, -1]])
    reference = forward_logits(model, GOOD_TEXT, GOOD_CODES, text_attention_mask=GOOD_MASK, codes_mask=codes_mask)
    torch.testing.assert_close(
        forward_logits(model, GOOD_TEXT, garbage, text_attention_mask=GOOD_MASK, codes_mask=codes_mask), reference
    )


GENERATE_ERRORS = {
    "temperature_zero": ({"temperature": 0.0}, r"temperature must be a number > 0, got 0.0"),
    "temperature_bool": ({"temperature": True}, r"temperature must be a number > 0, got True"),
    "top_k_negative": ({"top_k": -1}, r"top_k must be an integer >= 0 \(0 disables it\), got -1"),
    "top_k_float": ({"top_k": 2.5}, r"top_k must be an integer >= 0 \(0 disables it\), got 2.5"),
    "top_p_zero": ({"top_p": 0.0}, r"top_p must be in \(0, 1\] \(1 disables it\), got 0.0"),
    "top_p_above_one": ({"top_p": 1.5}, r"top_p must be in \(0, 1\] \(1 disables it\), got 1.5"),
    "max_frames_zero": ({"max_frames": 0}, r"max_frames must be a positive integer, got 0"),
    "max_frames_str": ({"max_frames": "4"}, r"max_frames must be a positive integer, got '4'"),
    "max_frames_too_long": ({"max_frames": 28}, r"Sequence too long: generating 28 frames needs position 32"),
    "text_too_long": ({"text_embeds": torch.randn(1, 9, 20), "text_attention_mask": None},
                      r"The text to speak has 9 tokens, more than max_text_tokens \(8\)"),
    "empty_text": ({"text_embeds": torch.randn(1, 0, 20), "text_attention_mask": None}, r"The text to speak is empty"),
}  # fmt: skip


@pytest.mark.parametrize("entry", ["generate", "generate_stream"])
@pytest.mark.parametrize("case", list(GENERATE_ERRORS))
def test_generate_rejects_bad_arguments(case, entry):
    model = make_talker()
    overrides, match = GENERATE_ERRORS[case]
    inputs = {"text_embeds": GOOD_TEXT, "text_attention_mask": GOOD_MASK, "do_sample": True, **overrides}
    with pytest.raises(ValueError, match=match):
        getattr(model, entry)(**inputs)  # generate_stream checks before the first frame is asked for


def test_generate_stream_rejects_bad_chunk_frames():
    with pytest.raises(ValueError, match=r"chunk_frames must be a positive integer, got 0"):
        make_talker().generate_stream(GOOD_TEXT, GOOD_MASK, chunk_frames=0)


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"codebook_loss_weights": [1.0]}, r"codebook_loss_weights must be 2 numbers >= 0 \(one per codebook\)"),
        ({"codebook_loss_weights": [0.0, 0.0]}, r"codebook_loss_weights must be 2 numbers >= 0 .* positive sum"),
        ({"codebook_loss_weights": [1.0, -1.0]}, r"codebook_loss_weights must be 2 numbers >= 0"),
        (
            {"max_position_embeddings": 27},
            r"max_position_embeddings \(27\) cannot hold the longest talker sequence: max_text_tokens \(8\) \+ 1 "
            r"\+ max_frames \(19\) = 28",
        ),
    ],
)
def test_talker_config_rejects_inconsistent_fields(overrides, match):
    with pytest.raises(ValueError, match=match):
        MuOmniTalkerConfig(**{**TINY_TALKER_CONFIG, **overrides})


# --- (i) save / load, gradient checkpointing, init ---------------------------------------------


def test_save_load_round_trip(tmp_path):
    model = make_talker(codebook_loss_weights=[2.0, 1.0])
    model.save_pretrained(tmp_path)
    codes = random_codes(2, 2, 4)
    expected = forward_logits(model, GOOD_TEXT, codes, text_attention_mask=GOOD_MASK)
    for loader in (MuOmniTalkerForConditionalGeneration, AutoModel):
        loaded, info = loader.from_pretrained(tmp_path, output_loading_info=True)
        assert type(loaded) is MuOmniTalkerForConditionalGeneration
        assert not any(info.values()), info  # no missing, unexpected or mismatched keys
        assert loaded.config.codebook_loss_weights == [2.0, 1.0]
        torch.testing.assert_close(loaded.rotary_emb.inv_freq, model.rotary_emb.inv_freq, atol=0, rtol=0)
        logits = forward_logits(loaded.eval(), GOOD_TEXT, codes, text_attention_mask=GOOD_MASK)
        torch.testing.assert_close(logits, expected, atol=0, rtol=0)
        assert torch.equal(loaded.generate(GOOD_TEXT, GOOD_MASK).codes, model.generate(GOOD_TEXT, GOOD_MASK).codes)


def test_gradient_checkpointing_gives_the_same_gradients():
    def gradients(model) -> dict[str, torch.Tensor]:
        model.zero_grad()
        model(GOOD_TEXT, GOOD_CODES, text_attention_mask=GOOD_MASK).loss.backward()
        return {name: param.grad.clone() for name, param in model.named_parameters()}

    model = make_talker().train()
    reference = gradients(model)
    model.activation_checkpointing_enable()
    assert all(layer.gradient_checkpointing for layer in model.layers)
    checkpointed = gradients(model)
    assert set(checkpointed) == set(reference)
    for name in reference:
        torch.testing.assert_close(checkpointed[name], reference[name], msg=name)


def test_init_and_output_capture():
    model = make_talker()
    assert 0.1 < model.bos_embedding.std() < 0.4  # initialised from initializer_range (0.2), not left at 0
    out = model(GOOD_TEXT, GOOD_CODES, text_attention_mask=GOOD_MASK, output_hidden_states=True)
    assert len(out.hidden_states) == model.config.num_hidden_layers + 1
    assert out.hidden_states[-1] is out.last_hidden_state and out.last_hidden_state.shape == (2, 5 + 1 + 4, 24)
    assert not torch.isnan(out.last_hidden_state).any()  # fully masked (left-pad) rows stay finite
