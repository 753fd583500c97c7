"""ViT-Tiny: shapes, the thinker's image tokens (CLS / CLS + pooled grid), batch invariance, the
contrastive projection, save/load, initialisation, gradient checkpointing, kernels, errors."""

import pytest
import torch
from transformers import AutoConfig, AutoModel

from muomni import MuOmniVisionEncoder
from muomni.configuration import MuOmniVisionEncoderConfig

TINY_VISION_CONFIG = {
    "image_size": 32,
    "patch_size": 8,  # a 4 x 4 grid, 16 patches
    "hidden_size": 24,
    "num_hidden_layers": 2,
    "num_attention_heads": 3,
    "intermediate_size": 37,
    "projection_dim": 13,
    "pooled_grid_size": 2,
    "initializer_range": 0.1,
}


def make_model(seed: int = 0, **overrides) -> MuOmniVisionEncoder:
    torch.manual_seed(seed)
    return MuOmniVisionEncoder(MuOmniVisionEncoderConfig(**{**TINY_VISION_CONFIG, **overrides})).eval()


def images(batch: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def test_output_shapes_and_cls_grid_tokens():
    model = make_model(attn_implementation="eager")
    out = model(images(), output_hidden_states=True, output_attentions=True)
    assert out.last_hidden_state.shape == (3, 17, 24)
    assert out.image_tokens.shape == (3, model.config.num_output_tokens, 24) == (3, 5, 24)
    torch.testing.assert_close(out.pooler_output, out.last_hidden_state[:, 0])
    assert len(out.hidden_states) == 3 and all(h.shape == (3, 17, 24) for h in out.hidden_states)
    assert len(out.attentions) == 2 and all(a.shape == (3, 3, 17, 17) for a in out.attentions)
    # CLS, then each 2 x 2 quadrant of the 4 x 4 patch grid averaged, row-major
    grid = out.last_hidden_state[:, 1:].reshape(3, 4, 4, 24)  # (B, rows, cols, D)
    quadrants = [grid[:, r : r + 2, c : c + 2].mean(dim=(1, 2)) for r in (0, 2) for c in (0, 2)]
    expected = torch.stack([out.last_hidden_state[:, 0], *quadrants], dim=1)
    torch.testing.assert_close(out.image_tokens, expected)


def test_cls_only_tokens():
    model = make_model(output_tokens="cls")
    out = model(images())
    assert model.config.num_output_tokens == 1
    assert out.image_tokens.shape == (3, 1, 24)
    torch.testing.assert_close(out.image_tokens[:, 0], out.last_hidden_state[:, 0])


def test_pooled_grid_of_the_whole_grid_is_every_patch():
    model = make_model(pooled_grid_size=4)
    out = model(images())
    assert out.image_tokens.shape == (3, 17, 24)
    torch.testing.assert_close(out.image_tokens, out.last_hidden_state)


def test_batch_invariance():
    model = make_model()
    pixel_values = images(batch=4)
    with torch.no_grad():
        batched = model(pixel_values).image_tokens
        for row in range(4):
            alone = model(pixel_values[row : row + 1]).image_tokens
            torch.testing.assert_close(batched[row : row + 1], alone, atol=1e-5, rtol=0)


def test_get_image_features_is_the_projected_cls_token():
    model = make_model()
    with torch.no_grad():
        features = model.get_image_features(images())
        cls = model(images()).last_hidden_state[:, 0]
    assert features.shape == (3, 13)
    assert model.visual_projection.bias is None
    torch.testing.assert_close(features, model.visual_projection(cls))


def test_eager_and_sdpa_agree():
    eager = make_model(attn_implementation="eager")
    sdpa = make_model(attn_implementation="sdpa")
    with torch.no_grad():
        torch.testing.assert_close(sdpa(images()).image_tokens, eager(images()).image_tokens, atol=1e-5, rtol=1e-5)


def test_output_attentions_needs_eager():
    model = make_model(attn_implementation="sdpa")
    with pytest.raises(ValueError, match="output_attentions=True needs the eager attention kernel.*'sdpa'"):
        model(images(), output_attentions=True)


def test_gradient_checkpointing_gives_the_same_gradients():
    gradients = []
    for checkpointing in (False, True):
        model = make_model().train()
        if checkpointing:
            model.activation_checkpointing_enable()
            assert all(layer.gradient_checkpointing for layer in model.layers)
        out = model(images())
        (out.image_tokens.square().mean() + model.get_image_features(images()).square().mean()).backward()
        gradients.append({name: p.grad.clone() for name, p in model.named_parameters()})
    for name, grad in gradients[0].items():
        torch.testing.assert_close(gradients[1][name], grad, atol=1e-6, rtol=1e-5, msg=name)


def test_initialisation():
    model = make_model(initializer_range=0.02, hidden_size=48, intermediate_size=96, num_attention_heads=4)
    embeddings = model.embeddings
    for parameter in (embeddings.cls_token, embeddings.position_embeddings, model.visual_projection.weight):
        assert abs(parameter.std().item() - 0.02) < 0.006
    assert torch.all(model.embeddings.patch_embedding.bias == 0)
    assert torch.all(model.post_layernorm.weight == 1) and torch.all(model.post_layernorm.bias == 0)


def test_save_and_load_round_trip(tmp_path):
    model = make_model()
    with torch.no_grad():
        expected = model(images())
    model.save_pretrained(tmp_path)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), MuOmniVisionEncoderConfig)
    for loader in (MuOmniVisionEncoder, AutoModel):
        reloaded = loader.from_pretrained(tmp_path).eval()
        assert isinstance(reloaded, MuOmniVisionEncoder)
        torch.testing.assert_close(reloaded.embeddings.cls_token, model.embeddings.cls_token, atol=0, rtol=0)
        with torch.no_grad():
            out = reloaded(images())
        torch.testing.assert_close(out.last_hidden_state, expected.last_hidden_state, atol=0, rtol=0)
        torch.testing.assert_close(out.image_tokens, expected.image_tokens, atol=0, rtol=0)


def test_input_errors():
    model = make_model()
    with pytest.raises(ValueError, match=r"pixel_values must have shape \(batch, 3, 32, 32\).*got \(2, 3, 64, 64\)"):
        model(torch.randn(2, 3, 64, 64))
    with pytest.raises(ValueError, match=r"pixel_values must have shape \(batch, 3, 32, 32\).*got \(2, 1, 32, 32\)"):
        model(torch.randn(2, 1, 32, 32))
    with pytest.raises(ValueError, match=r"got \(3, 32, 32\)"):
        model(torch.randn(3, 32, 32))
    with pytest.raises(TypeError, match="pixel_values must be a floating-point tensor, got dtype torch.uint8"):
        model(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(TypeError, match="pixel_values must be a torch.Tensor, got list"):
        model([[0.0]])
