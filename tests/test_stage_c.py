"""Stage C (contrastive vision pretraining): the InfoNCE loss against a manual computation, the clamped
temperature, retrieval recall on hand-made similarities, which parameters two steps change, the
augmentation, the recipe's artefacts (the vision encoder alone, loadable) and metrics, bad input."""

import os

import numpy as np
import PIL.Image
import pytest
import torch
from datasets import Dataset, DatasetDict
from transformers import AutoConfig, AutoModel, TrainingArguments

from muomni import MuOmniImageProcessor, MuOmniVisionEncoder, get_preset_config, train_tokenizer
from muomni.modeling_contrastive import (
    MuOmniContrastiveConfig,
    MuOmniContrastiveTextConfig,
    MuOmniVisionTextContrastiveModel,
)
from muomni.training.metrics import retrieval_recall
from muomni.training.stage_c import (
    ImageAugmentation,
    MuOmniContrastiveCollator,
    StageCTrainer,
    retrieval_gallery,
    run_stage_c,
)

VISION = {"image_size": 32, "patch_size": 8, "hidden_size": 24, "num_hidden_layers": 2, "num_attention_heads": 2,
          "intermediate_size": 37, "projection_dim": 13}  # fmt: skip
TEXT = {"vocab_size": 99, "hidden_size": 20, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 31,
        "max_position_embeddings": 16, "pad_token_id": 1}  # fmt: skip
WORDS = "a two three large small red blue green circle circles square star and".split()


def make_model(seed: int = 0, **text) -> MuOmniVisionTextContrastiveModel:
    torch.manual_seed(seed)
    config = MuOmniContrastiveConfig(vision_config=VISION, text_config={**TEXT, **text})
    return MuOmniVisionTextContrastiveModel(config)


def pairs(batch: int = 4, length: int = 7, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(2, 99, (batch, length), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 4:] = 0  # a right-padded caption
    input_ids[1, 4:] = 1
    return {"pixel_values": torch.randn(batch, 3, 32, 32, generator=generator), "input_ids": input_ids,
            "attention_mask": attention_mask}  # fmt: skip


def image(seed: int, size: int = 40) -> PIL.Image.Image:
    return PIL.Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8))


def caption_rows(count: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{"image": image(seed * 100 + i), "caption": " ".join(rng.choice(WORDS, size=4))} for i in range(count)]


@pytest.fixture(scope="module")
def tokenizer():
    rng = np.random.default_rng(0)
    return train_tokenizer([" ".join(rng.choice(WORDS, size=5)) for _ in range(200)], vocab_size=290)


@pytest.fixture(scope="module")
def images_data() -> dict[str, DatasetDict]:
    return {"images": DatasetDict({split: Dataset.from_list(caption_rows(n, seed)) for seed, (split, n) in
                                   enumerate((("train", 8), ("validation", 5), ("test", 4)))})}  # fmt: skip


# ---- the model -----------------------------------------------------------------------------------


def test_infonce_loss_equals_a_manual_computation():
    model = make_model().eval()
    batch = pairs()
    out = model(**batch)
    images = model.vision_model.get_image_features(batch["pixel_values"])
    texts = model.get_text_features(batch["input_ids"], batch["attention_mask"])
    images, texts = images / images.norm(dim=-1, keepdim=True), texts / texts.norm(dim=-1, keepdim=True)
    logits = torch.exp(torch.tensor(np.log(1 / 0.07))) * texts @ images.t()  # (captions, images)
    n = logits.shape[0]
    text_to_image = -torch.stack([logits[i].log_softmax(-1)[i] for i in range(n)]).mean()
    image_to_text = -torch.stack([logits[:, j].log_softmax(-1)[j] for j in range(n)]).mean()
    torch.testing.assert_close(out.loss, (text_to_image + image_to_text) / 2)
    torch.testing.assert_close(out.logits_per_text, logits)
    torch.testing.assert_close(out.logits_per_image, logits.t())
    assert model(**batch, return_loss=False).loss is None


def test_temperature_starts_at_007_and_is_clamped_at_100():
    model = make_model().eval()
    assert torch.isclose(model.logit_scale.exp(), torch.tensor(1 / 0.07))
    with torch.no_grad():
        model.logit_scale.fill_(10.0)
    out = model(**pairs())
    cosine = out.text_embeds @ out.image_embeds.t()
    torch.testing.assert_close(out.logits_per_text, 100.0 * cosine)


def test_text_features_ignore_padding_and_save_load_round_trip(tmp_path):
    model = make_model().eval()
    batch = pairs()
    padded = {key: torch.cat([value, torch.ones_like(value[:, :3])], dim=1) for key, value in batch.items()
              if key != "pixel_values"}  # fmt: skip
    padded["attention_mask"][:, -3:] = 0
    torch.testing.assert_close(
        model.get_text_features(**padded), model.get_text_features(batch["input_ids"], batch["attention_mask"])
    )
    model.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, MuOmniVisionTextContrastiveModel)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), MuOmniContrastiveConfig)
    torch.testing.assert_close(loaded(**batch).logits_per_text, model(**batch).logits_per_text)


# ---- retrieval -----------------------------------------------------------------------------------


def test_retrieval_recall_on_a_hand_made_similarity_matrix():
    similarity = torch.tensor(
        [
            [0.9, 0.1, 0.0, 0.0],  # image 0: caption 0 ranked 1st
            [0.8, 0.5, 0.0, 0.0],  # image 1: caption 1 ranked 2nd
            [0.0, 0.0, 0.1, 0.7],  # image 2: caption 2 ranked 2nd
            [0.0, 0.9, 0.8, 0.6],  # image 3: caption 3 ranked 3rd
        ]
    )
    # captions as queries (columns): 0 -> image 0 first; 1 -> image 3 (0.9) above 1 (0.5): 2nd;
    # 2 -> image 3 (0.8) above 2 (0.1): 2nd; 3 -> image 2 (0.7) above 3 (0.6): 2nd
    recall = retrieval_recall(similarity, ks=(1, 2, 5))
    assert recall["recall_at_1"] == pytest.approx((1 / 4 + 1 / 4) / 2)
    assert recall["recall_at_2"] == pytest.approx((3 / 4 + 4 / 4) / 2)
    assert recall["recall_at_5"] == pytest.approx(1.0)  # k beyond the gallery is the whole gallery


def test_retrieval_gallery_keeps_one_image_per_distinct_caption():
    assert retrieval_gallery(["a red star", "two circles", "A  red star", "a blue star", "two circles"]) == [0, 1, 3]


def test_stage_metric_scores_the_whole_deduplicated_split(tmp_path, tokenizer, images_data):
    validation = images_data["images"]["validation"]
    duplicated = Dataset.from_list([*validation, {**validation[0], "image": image(99)}])
    model = make_model(vocab_size=len(tokenizer))
    trainer = StageCTrainer(
        model=model,
        args=TrainingArguments(str(tmp_path), report_to="none", per_device_eval_batch_size=2, disable_tqdm=True),
        eval_dataset=duplicated,
        data_collator=MuOmniContrastiveCollator(tokenizer, MuOmniImageProcessor(size={"height": 32, "width": 32})),
    )
    metrics = trainer.evaluate()
    gallery = len(set(validation["caption"]))
    assert metrics["eval_retrieval_gallery_size"] == gallery
    assert metrics["eval_chance_recall_at_1"] == pytest.approx(1 / gallery)
    assert metrics["eval_chance_recall_at_5"] == pytest.approx(min(5, gallery) / gallery)
    # the same numbers as retrieval_recall over the gallery embedded in one batch
    rows = [duplicated[i] for i in retrieval_gallery(duplicated["caption"])]
    with torch.no_grad():
        out = model.eval()(**trainer.data_collator(rows), return_loss=False)
    expected = retrieval_recall(out.image_embeds @ out.text_embeds.t())
    assert metrics["eval_recall_at_1"] == pytest.approx(expected["recall_at_1"])
    assert metrics["eval_recall_at_5"] == pytest.approx(expected["recall_at_5"])


# ---- training ------------------------------------------------------------------------------------


def test_two_steps_change_every_parameter_tensor(tmp_path, tokenizer, images_data):
    model = make_model(vocab_size=len(tokenizer))
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    args = TrainingArguments(
        str(tmp_path), max_steps=2, per_device_train_batch_size=4, learning_rate=1e-2, report_to="none",
        save_strategy="no", disable_tqdm=True, remove_unused_columns=False, dataloader_pin_memory=False,
    )  # fmt: skip
    collator = MuOmniContrastiveCollator(tokenizer, MuOmniImageProcessor(size={"height": 32, "width": 32}))
    train = images_data["images"]["train"]
    trainer = StageCTrainer(model=model, args=args, train_dataset=train, data_collator=collator)
    assert trainer.parameter_counts["frozen"] == 0  # stage C trains everything
    trainer.train()
    unchanged = [name for name, p in model.named_parameters() if torch.equal(p.detach(), before[name])]
    assert unchanged == []
    assert model.logit_scale.item() != pytest.approx(np.log(1 / 0.07), abs=1e-6)


def test_augmentation_is_seeded_and_keeps_the_size():
    picture = image(0, size=48)
    augmentation = ImageAugmentation()
    first = augmentation(picture, np.random.default_rng(1))
    again = augmentation(picture, np.random.default_rng(1))
    other = augmentation(picture, np.random.default_rng(2))
    assert first.size == picture.size and np.array_equal(np.asarray(first), np.asarray(again))
    assert not np.array_equal(np.asarray(first), np.asarray(other))
    # no crop, no jitter, certain flip: the mirror image
    mirror = ImageAugmentation(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip=1.0, brightness=0, contrast=0,
                               saturation=0)(picture, np.random.default_rng(0))  # fmt: skip
    assert np.array_equal(np.asarray(mirror), np.asarray(picture)[:, ::-1])
    with pytest.raises(ValueError, match="crop_scale must satisfy"):
        ImageAugmentation(crop_scale=(0.5, 1.2))
    with pytest.raises(ValueError, match="flip must be in"):
        ImageAugmentation(flip=2)


# ---- the recipe ----------------------------------------------------------------------------------


def tiny_config():
    return get_preset_config("tiny", thinker_config={"vision_config": VISION})


RECIPE_OVERRIDES = {"max_steps": 3, "per_device_train_batch_size": 4, "per_device_eval_batch_size": 4,
                    "disable_tqdm": True, "logging_steps": 1, "dataloader_pin_memory": False,
                    "text_config": {"hidden_size": 16, "intermediate_size": 23}}  # fmt: skip


def test_recipe_saves_the_vision_encoder_and_reports_retrieval(tmp_path, images_data):
    overrides = {**RECIPE_OVERRIDES, "augmentation": {"crop_scale": (0.5, 1.0)}}
    result = run_stage_c(tiny_config(), images_data, str(tmp_path), training_overrides=overrides)
    assert result.stage == "C"
    assert set(result.outputs) == {"vision_encoder", "contrastive", "tokenizer"}  # no stage-A tokenizer given
    assert result.metrics["tokenizer_trained_in_stage"] == 1.0
    for split, size in (("eval", 5), ("test", 4)):
        assert result.metrics[f"{split}_retrieval_gallery_size"] == size
        assert result.metrics[f"{split}_chance_recall_at_1"] == pytest.approx(1 / size)
        assert 0 <= result.metrics[f"{split}_recall_at_1"] <= result.metrics[f"{split}_recall_at_5"] <= 1
    assert os.path.isfile(tmp_path / "training_curves.png")

    vision = MuOmniVisionEncoder.from_pretrained(result.outputs["vision_encoder"])
    contrastive = MuOmniVisionTextContrastiveModel.from_pretrained(result.outputs["contrastive"])
    assert {key: getattr(vision.config, key) for key in VISION} == VISION  # the thinker's vision config
    for key, value in vision.state_dict().items():
        assert torch.equal(value, contrastive.vision_model.state_dict()[key]), key
    processor = MuOmniImageProcessor.from_pretrained(result.outputs["vision_encoder"])
    assert processor.size == {"height": 32, "width": 32}


def test_recipe_uses_the_stage_a_tokenizer(tmp_path, tokenizer, images_data):
    tokenizer.save_pretrained(tmp_path / "stage_a")
    result = run_stage_c(
        tiny_config(), images_data, str(tmp_path / "c"), previous={"tokenizer": str(tmp_path / "stage_a")},
        training_overrides={**RECIPE_OVERRIDES, "max_steps": 1},
    )  # fmt: skip
    assert "tokenizer" not in result.outputs and result.metrics["tokenizer_trained_in_stage"] == 0.0
    contrastive = MuOmniVisionTextContrastiveModel.from_pretrained(result.outputs["contrastive"])
    assert contrastive.config.text_config.vocab_size == len(tokenizer)


# ---- bad input -----------------------------------------------------------------------------------


def test_bad_input(tmp_path, images_data):
    config, out = tiny_config(), str(tmp_path)
    train = images_data["images"]["train"]
    with pytest.raises(ValueError, match="datasets must hold a 'images' DatasetDict"):
        run_stage_c(config, {"text": images_data["images"]}, out)
    with pytest.raises(ValueError, match=r"lacks the columns \['caption'\]"):
        run_stage_c(config, {"images": DatasetDict({"train": train.remove_columns("caption"),
                                                    "validation": train})}, out)  # fmt: skip
    with pytest.raises(ValueError, match=r"\['validation'\] is empty"):
        run_stage_c(config, {"images": DatasetDict({"train": train, "validation": train.select([])})}, out)
    with pytest.raises(ValueError, match="has no 'validation' split"):
        run_stage_c(config, {"images": DatasetDict({"train": train})}, out)
    with pytest.raises(ValueError, match=r"unknown training_overrides \['colour_jitter'\]"):
        run_stage_c(config, images_data, out, training_overrides={"colour_jitter": 0.1})
    with pytest.raises(TypeError, match="augmentation must be a bool, a dict or an ImageAugmentation"):
        run_stage_c(config, images_data, out, training_overrides={"augmentation": "strong"})
    with pytest.raises(ValueError, match="previous\\['tokenizer'\\] is not a directory"):
        run_stage_c(config, images_data, out, previous={"tokenizer": str(tmp_path / "nowhere")})
    with pytest.raises(TypeError, match="config must be a MuOmniConfig"):
        run_stage_c(config.thinker_config, images_data, out)

    model, batch = make_model().eval(), pairs()
    with pytest.raises(ValueError, match="4 images and 3 captions"):
        model(batch["pixel_values"], batch["input_ids"][:3], batch["attention_mask"][:3])
    with pytest.raises(ValueError, match="exceed the text tower's max_position_embeddings \\(16\\)"):
        model.get_text_features(torch.ones(2, 17, dtype=torch.long))
    with pytest.raises(ValueError, match="captions \\[1\\] have no real token"):
        model.get_text_features(batch["input_ids"][:2], torch.tensor([[1] * 7, [0] * 7]))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        model.get_text_features(torch.full((1, 3), 99))
    with pytest.raises(ValueError, match="no caption text"):
        MuOmniContrastiveCollator(None, None)([{"image": image(0), "caption": "  "}])
    with pytest.raises(ValueError, match="hidden_size \\(20\\) is not a multiple of num_attention_heads \\(3\\)"):
        MuOmniContrastiveTextConfig(hidden_size=20, num_attention_heads=3)
    with pytest.raises(ValueError, match="logit_scale_init_value"):
        MuOmniContrastiveConfig(logit_scale_init_value=5.0)
