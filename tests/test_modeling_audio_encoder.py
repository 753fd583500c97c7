"""AuT-Tiny: shapes, the length arithmetic the processor relies on, padding invariance, the CTC head
(loss, satisfiability, end-to-end overfitting), save/load, gradient checkpointing, kernels, errors."""

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModel, AutoModelForCTC

from muomni import MuOmniAudioEncoder, MuOmniAudioEncoderForCTC
from muomni.configuration import MuOmniAudioEncoderConfig
from muomni.modeling_audio_encoder import (
    audio_encoder_output_lengths,
    audio_max_input_frames,
    audio_token_count,
    ctc_greedy_decode,
    ctc_required_frames,
)

TINY_AUDIO_CONFIG = {
    "num_mel_bins": 16,
    "d_model": 24,
    "encoder_layers": 2,
    "encoder_attention_heads": 3,
    "encoder_ffn_dim": 37,
    "ctc_vocab_size": 11,
    "initializer_range": 0.1,
}


def make_config(**overrides) -> MuOmniAudioEncoderConfig:
    return MuOmniAudioEncoderConfig(**{**TINY_AUDIO_CONFIG, **overrides})


def make_model(cls=MuOmniAudioEncoderForCTC, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    return cls(make_config(**overrides)).eval()


def padded_batch(lengths: list[int], num_mel_bins: int = 16, seed: int = 0, pad_value: float = 0.0):
    """Right-padded (B, M, F) features and (B, F) mask; padded frames hold `pad_value`."""
    generator = torch.Generator().manual_seed(seed)
    num_frames = max(lengths)
    features = torch.full((len(lengths), num_mel_bins, num_frames), pad_value)
    mask = torch.zeros(len(lengths), num_frames, dtype=torch.long)
    for row, length in enumerate(lengths):
        features[row, :, :length] = torch.randn(num_mel_bins, length, generator=generator)
        mask[row, :length] = 1
    return features, mask


# ---------------------------------------------------------------- lengths


def test_ten_second_clip_numbers():
    config = MuOmniAudioEncoderConfig()  # the defaults: factor 4, stack 2
    # centred framing: 1001 mel frames at 100 Hz -> 501 -> 251 frames at 25 Hz -> 126 tokens at 12.5 Hz
    assert audio_encoder_output_lengths(config, 1001) == 251
    assert audio_token_count(config, 1001) == 126
    # MuOmni's feature extractor drops the last centred frame: 1000 -> 250 -> 125
    assert audio_encoder_output_lengths(config, 1000) == 250
    assert audio_token_count(config, 1000) == 125
    lengths = torch.tensor([1, 4, 5, 1000, 1001, 3000])
    assert audio_encoder_output_lengths(config, lengths).tolist() == [1, 1, 2, 250, 251, 750]
    assert audio_token_count(config, lengths).tolist() == [1, 1, 1, 125, 126, 375]
    assert config.inputs_to_logits_ratio == 640  # hop 160 samples x factor 4


@pytest.mark.parametrize("factor", [1, 2, 4, 8])
def test_length_formula_is_the_conv_arithmetic(factor):
    config = make_config(downsample_factor=factor)
    for length in range(1, 300):
        expected = length
        for _ in range({1: 0, 2: 1, 4: 2, 8: 3}[factor]):
            expected = (expected - 1) // 2 + 1
        assert audio_encoder_output_lengths(config, length) == expected
        assert audio_token_count(config, length) == -(-expected // config.stack_factor)


def test_length_formula_matches_model_output():
    model = make_model(MuOmniAudioEncoder)
    features, mask = padded_batch(list(range(1, 201)))
    with torch.no_grad():
        batched = model(features, feature_attention_mask=mask)
        expected = audio_encoder_output_lengths(model.config, torch.arange(1, 201))
        assert torch.equal(batched.output_lengths, expected)
        assert torch.equal(batched.attention_mask.sum(-1), expected)
        assert batched.last_hidden_state.shape == (200, 50, 24)
        for length in [*range(1, 10), 99, 100, 101, 200]:
            alone = model(features[:1, :, :length])
            assert alone.last_hidden_state.shape[1] == audio_encoder_output_lengths(model.config, length)
            assert model.get_output_lengths(torch.tensor([length])).tolist() == [alone.output_lengths.item()]


def test_thirty_and_sixty_second_clips():
    model = make_model(MuOmniAudioEncoder, max_source_seconds=60)
    assert audio_max_input_frames(model.config) == 6001
    with torch.no_grad():
        for num_frames, expected in [(3000, 750), (6000, 1500)]:
            out = model(torch.randn(1, 16, num_frames))
            assert out.last_hidden_state.shape == (1, expected, 24)
            assert audio_encoder_output_lengths(model.config, num_frames) == expected


# ---------------------------------------------------------------- encoder behaviour


def test_output_shapes_hidden_states_and_attentions():
    model = make_model(MuOmniAudioEncoder, attn_implementation="eager")
    features, mask = padded_batch([37, 20])
    out = model(features, feature_attention_mask=mask, output_hidden_states=True, output_attentions=True)
    assert out.last_hidden_state.shape == (2, 10, 24)
    assert out.output_lengths.tolist() == [10, 5]
    assert out.attention_mask.tolist() == [[1] * 10, [1] * 5 + [0] * 5]
    assert len(out.hidden_states) == 3 and all(h.shape == (2, 10, 24) for h in out.hidden_states)
    assert len(out.attentions) == 2 and all(a.shape == (2, 3, 10, 10) for a in out.attentions)
    # padded keys get no attention; padded output frames are zero
    assert torch.all(out.attentions[0][1, :, :, 5:] == 0)
    assert torch.all(out.last_hidden_state[1, 5:] == 0)


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_padding_invariance(attn_implementation):
    model = make_model(attn_implementation=attn_implementation)
    lengths = [1, 2, 3, 4, 5, 8, 11, 64, 97, 150]
    # garbage in the padding must not leak into real frames through the convs or attention
    features, mask = padded_batch(lengths, pad_value=1e3)
    with torch.no_grad():
        batched = model(features, feature_attention_mask=mask)
        for row, length in enumerate(lengths):
            alone = model(features[row : row + 1, :, :length])
            frames = alone.logits.shape[1]
            assert batched.output_lengths[row] == frames
            torch.testing.assert_close(batched.logits[row, :frames], alone.logits[0], atol=1e-5, rtol=0)


def test_attention_mask_is_an_alias_of_feature_attention_mask():
    model = make_model()
    features, mask = padded_batch([30, 9])
    with torch.no_grad():
        by_feature_mask = model(features, feature_attention_mask=mask).logits
        by_alias = model(input_features=features, attention_mask=mask).logits
    torch.testing.assert_close(by_alias, by_feature_mask, atol=0, rtol=0)


def test_eager_and_sdpa_agree():
    eager = make_model(attn_implementation="eager")
    sdpa = make_model(attn_implementation="sdpa")
    features, mask = padded_batch([40, 13, 2])
    with torch.no_grad():
        torch.testing.assert_close(
            sdpa(features, feature_attention_mask=mask).logits,
            eager(features, feature_attention_mask=mask).logits,
            atol=1e-5,
            rtol=1e-5,
        )


def test_gradient_checkpointing_gives_the_same_gradients():
    features, mask = padded_batch([33, 21])
    labels = torch.tensor([[1, 2, 3], [4, -100, -100]])
    gradients = []
    for checkpointing in (False, True):
        model = make_model().train()
        if checkpointing:
            model.activation_checkpointing_enable()
            assert all(layer.gradient_checkpointing for layer in model.audio_encoder.layers)
        model(features, feature_attention_mask=mask, labels=labels).loss.backward()
        gradients.append({name: p.grad.clone() for name, p in model.named_parameters()})
    for name, grad in gradients[0].items():
        torch.testing.assert_close(gradients[1][name], grad, atol=1e-6, rtol=1e-5, msg=name)


def test_save_and_load_round_trips(tmp_path):
    model = make_model()
    features, mask = padded_batch([25, 12])
    with torch.no_grad():
        expected = model(features, feature_attention_mask=mask)
    model.save_pretrained(tmp_path / "ctc")
    assert isinstance(AutoConfig.from_pretrained(tmp_path / "ctc"), MuOmniAudioEncoderConfig)
    for loader in (MuOmniAudioEncoderForCTC, AutoModelForCTC):
        reloaded = loader.from_pretrained(tmp_path / "ctc").eval()
        assert isinstance(reloaded, MuOmniAudioEncoderForCTC)
        with torch.no_grad():
            logits = reloaded(features, feature_attention_mask=mask).logits
        torch.testing.assert_close(logits, expected.logits, atol=0, rtol=0)
    # the CTC checkpoint's encoder loads on its own (base_model_prefix), and the encoder round-trips via AutoModel
    encoder = AutoModel.from_pretrained(tmp_path / "ctc").eval()
    assert isinstance(encoder, MuOmniAudioEncoder)
    with torch.no_grad():
        hidden = encoder(features, feature_attention_mask=mask).last_hidden_state
        torch.testing.assert_close(model.lm_head(hidden), expected.logits, atol=0, rtol=0)
    encoder.save_pretrained(tmp_path / "encoder")
    reloaded = AutoModel.from_pretrained(tmp_path / "encoder").eval()
    with torch.no_grad():
        reloaded_hidden = reloaded(features, feature_attention_mask=mask).last_hidden_state
    torch.testing.assert_close(reloaded_hidden, hidden, atol=0, rtol=0)


def test_initialisation():
    model = make_model(initializer_range=0.02)
    conv = model.audio_encoder.conv_layers[0]
    assert abs(conv.weight.std().item() - 0.02) < 0.005 and torch.all(conv.bias == 0)
    assert abs(model.lm_head.weight.std().item() - 0.02) < 0.005 and torch.all(model.lm_head.bias == 0)
    norm = model.audio_encoder.layers[0].input_layernorm
    assert torch.all(norm.weight == 1) and torch.all(norm.bias == 0)


# ---------------------------------------------------------------- CTC


def test_ctc_loss_matches_manual_ctc_loss():
    model = make_model()
    features, mask = padded_batch([40, 23, 9])
    labels = torch.tensor([[1, 2, 2, 3], [4, 5, -100, -100], [6, -100, -100, -100]])
    with torch.no_grad():
        out = model(features, feature_attention_mask=mask, labels=labels)
        log_probs = out.logits.float().log_softmax(-1).transpose(0, 1)  # (F', B, V)
        manual = F.ctc_loss(
            log_probs,
            torch.tensor([1, 2, 2, 3, 4, 5, 6]),
            input_lengths=torch.tensor([10, 6, 3]),
            target_lengths=torch.tensor([4, 2, 1]),
            blank=0,
            reduction="mean",
        )
    assert out.output_lengths.tolist() == [10, 6, 3]
    torch.testing.assert_close(out.loss, manual)


def test_ctc_loss_reduction_and_blank_come_from_the_config():
    model = make_model(ctc_loss_reduction="sum", ctc_blank_id=10)
    features, mask = padded_batch([20, 12])
    labels = torch.tensor([[0, 1], [2, -100]])
    with torch.no_grad():
        out = model(features, feature_attention_mask=mask, labels=labels)
        manual = F.ctc_loss(
            out.logits.log_softmax(-1).transpose(0, 1),
            torch.tensor([0, 1, 2]),
            torch.tensor([5, 3]),
            torch.tensor([2, 1]),
            blank=10,
            reduction="sum",
        )
    torch.testing.assert_close(out.loss, manual)


def test_ctc_required_frames():
    assert ctc_required_frames([]) == 0
    assert ctc_required_frames([1, 2, 3]) == 3
    assert ctc_required_frames([1, 1, 2, 2, 2]) == 8


def test_unsatisfiable_ctc_target_raises():
    model = make_model()
    features, mask = padded_batch([20, 8])  # 5 and 2 frames at 25 Hz
    fits = torch.tensor([[1, 2, 3, 4, 5], [1, 2, -100, -100, -100]])
    model(features, feature_attention_mask=mask, labels=fits)
    # [3, 3] needs a blank between the repeats: 3 frames, the clip has 2
    repeats = torch.tensor([[1, 2, 3, 4, 5], [3, 3, -100, -100, -100]])
    with pytest.raises(ValueError, match=r"sample 1 cannot fit.*need 3 frames.*only 2 frames at 25 frames/s"):
        model(features, feature_attention_mask=mask, labels=repeats)
    too_long = torch.tensor([[1, 2, 3, 4, 5, 6], [1, -100, -100, -100, -100, -100]])
    with pytest.raises(ValueError, match=r"sample 0 cannot fit.*6 labels.*only 5 frames"):
        model(features, feature_attention_mask=mask, labels=too_long)


def test_invalid_labels_raise():
    model = make_model()
    features, mask = padded_batch([20, 8])
    with pytest.raises(ValueError, match=r"labels contain \[0\].*without the blank id 0"):
        model(features, feature_attention_mask=mask, labels=torch.tensor([[1, 0], [2, -100]]))
    with pytest.raises(ValueError, match=r"labels contain \[11\]"):
        model(features, feature_attention_mask=mask, labels=torch.tensor([[1, 11], [2, -100]]))
    with pytest.raises(ValueError, match=r"labels must have shape \(batch=2, max_label_length\)"):
        model(features, feature_attention_mask=mask, labels=torch.tensor([1, 2]))
    with pytest.raises(TypeError, match="labels must be integer ids"):
        model(features, feature_attention_mask=mask, labels=torch.ones(2, 2))


def test_ctc_greedy_decode():
    blank = 0
    ids = torch.tensor([[0, 3, 3, 0, 3, 5, 5, 0, 7], [2, 2, 2, 0, 0, 4, 0, 0, 0]])
    assert ctc_greedy_decode(ids) == [[3, 3, 5, 7], [2, 4]]
    assert ctc_greedy_decode(ids, torch.tensor([6, 3])) == [[3, 3, 5], [2]]
    logits = F.one_hot(ids, 8).float()  # (B, F', V)
    assert ctc_greedy_decode(logits, torch.tensor([9, 9]), blank_id=blank) == [[3, 3, 5, 7], [2, 4]]
    assert ctc_greedy_decode(logits, blank_id=3) == [[0, 0, 5, 0, 7], [2, 0, 4, 0]]
    with pytest.raises(ValueError, match=r"logits must be \(batch, frames, vocab\) scores"):
        ctc_greedy_decode(torch.zeros(9))
    with pytest.raises(ValueError, match="output_lengths has 3 entries for a batch of 2"):
        ctc_greedy_decode(ids, torch.tensor([1, 2, 3]))


def test_ctc_overfits_two_clips_and_greedy_decoding_reproduces_the_targets():
    model = make_model(seed=0).train()
    # two synthetic "utterances": each character is a 4-frame block of its own random mel pattern
    torch.manual_seed(1)
    patterns = torch.randn(11, 16)  # one mel pattern per character id
    targets = [[1, 2, 3, 2], [4, 5, 5, 6, 7]]
    clips = [torch.cat([patterns[c, :, None].expand(16, 8) for c in target], dim=1) for target in targets]
    features, mask = padded_batch([clip.shape[1] for clip in clips])
    for row, clip in enumerate(clips):
        features[row, :, : clip.shape[1]] = clip
    labels = torch.full((2, 5), -100)
    for row, target in enumerate(targets):
        labels[row, : len(target)] = torch.tensor(target)

    optimizer = torch.optim.Adam(model.parameters(), lr=3e-2)
    losses = []
    for _ in range(20):  # every seed tried decodes correctly after ~6-11 steps
        loss = model(features, feature_attention_mask=mask, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0]
    model.eval()
    with torch.no_grad():
        out = model(features, feature_attention_mask=mask)
    assert ctc_greedy_decode(out.logits, out.output_lengths, model.config.ctc_blank_id) == targets


# ---------------------------------------------------------------- input errors


def test_input_errors():
    model = make_model()
    with pytest.raises(ValueError, match=r"has 20 mel bins, the encoder expects num_mel_bins=16"):
        model(torch.randn(1, 20, 30))
    with pytest.raises(ValueError, match=r"must have shape \(batch, num_mel_bins=16, frames\), got 2-D"):
        model(torch.randn(16, 30))
    with pytest.raises(TypeError, match="must be a floating-point log-mel tensor"):
        model(torch.ones(1, 16, 30, dtype=torch.long))
    with pytest.raises(TypeError, match="input_features must be a torch.Tensor, got list"):
        model([[0.0]])
    with pytest.raises(ValueError, match="has 0 frames"):
        model(torch.randn(1, 16, 0))
    assert audio_max_input_frames(model.config) == 3001
    model(torch.randn(1, 16, 3001))
    with pytest.raises(ValueError, match=r"3002 frames \(30.02 s\), longer than max_source_seconds=30.0"):
        model(torch.randn(1, 16, 3002))


def test_mask_errors():
    model = make_model()
    features, mask = padded_batch([10, 6])
    with pytest.raises(ValueError, match=r"mask must have shape \(batch, frames\) = \(2, 10\).*got \(2, 9\)"):
        model(features, feature_attention_mask=mask[:, :9])
    with pytest.raises(ValueError, match="not both"):
        model(features, feature_attention_mask=mask, attention_mask=mask)
    empty = mask.clone()
    empty[1] = 0
    with pytest.raises(ValueError, match=r"no real frame for clip\(s\) \[1\]"):
        model(features, feature_attention_mask=empty)
    left_padded = mask.flip(-1)
    with pytest.raises(ValueError, match=r"must be right-padded \(ones, then zeros\) but clip\(s\) \[1\]"):
        model(features, feature_attention_mask=left_padded)


def test_output_attentions_needs_eager():
    model = make_model(attn_implementation="sdpa")
    with pytest.raises(ValueError, match="output_attentions=True needs the eager attention kernel.*'sdpa'"):
        model(torch.randn(1, 16, 12), output_attentions=True)
    model.set_attn_implementation("eager")
    assert len(model(torch.randn(1, 16, 12), output_attentions=True).attentions) == 2


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"d_model": 21, "encoder_attention_heads": 3}, r"d_model \(21\) must be even"),
        ({"sampling_rate": 16001}, r"sampling_rate \(16001\) is not a multiple of frames_per_second \(100\)"),
        ({"ctc_loss_reduction": "avg"}, r"ctc_loss_reduction must be 'mean', 'sum' or 'none', got 'avg'"),
    ],
)
def test_config_errors(overrides, message):
    with pytest.raises(ValueError, match=message):
        make_config(**overrides)


def test_config_standard_aliases():
    config = make_config()
    assert (config.hidden_size, config.num_attention_heads, config.num_hidden_layers) == (24, 3, 2)
    assert (config.intermediate_size, config.hidden_act) == (37, "gelu")
