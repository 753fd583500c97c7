"""MuOmniImageProcessor: CLIP parity, every accepted input, RGB conversion rules, errors, save/load."""

import io
import struct
import zlib

import numpy as np
import PIL.Image
import PIL.ImageDraw
import pytest
import torch
from transformers import AutoImageProcessor
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

import muomni  # noqa: F401  (registers the Auto classes)
from muomni.configuration import MuOmniConfig, MuOmniVisionEncoderConfig
from muomni.processing import MuOmniImageProcessor


@pytest.fixture(scope="module")
def processor():
    return MuOmniImageProcessor()


def drawing(width: int = 150, height: int = 100) -> PIL.Image.Image:
    """A deterministic RGB picture: gradient background, a red disc and a blue bar."""
    x = np.linspace(0, 255, width, dtype=np.float64)[None, :, None]
    y = np.linspace(0, 255, height, dtype=np.float64)[:, None, None]
    background = np.concatenate([x + 0 * y, y + 0 * x, (x + y) / 2], axis=-1).astype(np.uint8)
    image = PIL.Image.fromarray(background)
    draw = PIL.ImageDraw.Draw(image)
    draw.ellipse((10, 10, 60, 60), fill=(220, 30, 30))
    draw.rectangle((80, 20, 140, 40), fill=(20, 40, 200))
    return image


def encoded(image: PIL.Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (8-bit gray) but whose pixel data is garbage."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"garbage") + chunk(b"IEND", b"")


def pixels(processor, images, **kwargs) -> torch.Tensor:
    return processor(images, return_tensors="pt", **kwargs)["pixel_values"]


# ----------------------------------------------------------------------------------------------
# Output and parity


def test_matches_clip_pil_processor_without_center_crop(processor):
    image = drawing()
    clip = CLIPImageProcessorPil(size={"height": 224, "width": 224}, do_center_crop=False)
    ours = pixels(processor, image)
    assert ours.shape == (1, 3, 224, 224) and ours.dtype == torch.float32
    assert torch.equal(ours, clip(image, return_tensors="pt")["pixel_values"])


def test_normalization_is_clip_mean_and_std(processor):
    white = pixels(processor, PIL.Image.new("RGB", (30, 30), (255, 255, 255)))
    mean, std = torch.tensor([0.48145466, 0.4578275, 0.40821073]), torch.tensor([0.26862954, 0.26130258, 0.27577711])
    expected = (1 - mean) / std
    torch.testing.assert_close(white[0, :, 100, 100], expected)


def test_custom_size_and_no_tensors():
    processor = MuOmniImageProcessor(size={"height": 48, "width": 64})
    assert pixels(processor, drawing()).shape == (1, 3, 48, 64)
    out = processor([drawing(), drawing(40, 40)])
    assert isinstance(out["pixel_values"], list) and out["pixel_values"][1].shape == (3, 48, 64)


# ----------------------------------------------------------------------------------------------
# Accepted inputs


def test_every_input_kind_gives_the_same_pixels(processor, tmp_path):
    image = drawing()
    hwc = np.array(image)  # (H, W, 3) uint8
    path = tmp_path / "drawing.png"
    image.save(path)
    inputs = [
        image,
        hwc,
        np.ascontiguousarray(hwc.transpose(2, 0, 1)),  # (3, H, W) uint8
        hwc.transpose(2, 0, 1).astype(np.float32) / 255,  # (3, H, W) float in [0, 1]
        hwc.astype(np.float64) / 255,  # (H, W, 3) float
        torch.from_numpy(hwc).permute(2, 0, 1),  # (3, H, W) uint8 tensor
        torch.from_numpy(hwc).permute(2, 0, 1).float() / 255,  # (3, H, W) float tensor
        torch.from_numpy(hwc.copy()),  # (H, W, 3) tensor: last axis is the channel axis
        str(path),
        path,
        encoded(image),
        bytearray(encoded(image)),
    ]
    out = pixels(processor, inputs)
    assert out.shape == (len(inputs), 3, 224, 224)
    for i in range(1, len(inputs)):
        assert torch.equal(out[i], out[0]), f"input {i} differs"


def test_nested_lists_and_4d_batches_are_flattened(processor):
    image = np.asarray(drawing())
    batch = np.stack([image, image[::-1]])  # (2, H, W, 3)
    out = pixels(processor, [[image], [batch[1], image], torch.from_numpy(batch).permute(0, 3, 1, 2)])
    assert out.shape == (5, 3, 224, 224)
    # flat order: image, batch[1], image, batch[0] (= image), batch[1]
    assert torch.equal(out[1], out[4]) and torch.equal(out[0], out[2]) and torch.equal(out[0], out[3])
    assert not torch.equal(out[0], out[1])


def test_grayscale_inputs(processor):
    gray = np.array(drawing().convert("L"))  # (H, W)
    expected = pixels(processor, PIL.Image.fromarray(gray).convert("RGB"))
    for variant in (gray, gray[..., None], gray[None], PIL.Image.fromarray(gray), torch.from_numpy(gray)):
        assert torch.equal(pixels(processor, variant), expected)


def test_input_data_format_settles_ambiguous_layouts(processor):
    # (3, 20, 4): numpy reads a 4-channel last axis by default; say channels_first to mean C = 3
    array = np.random.default_rng(0).integers(0, 256, (3, 20, 4), dtype=np.uint8)
    assert torch.equal(
        pixels(processor, array, input_data_format="channels_first"),
        pixels(processor, np.ascontiguousarray(array.transpose(1, 2, 0))),
    )
    assert torch.equal(
        pixels(processor, array, input_data_format="channels_last"),
        pixels(processor, PIL.Image.fromarray(array, "RGBA")),
    )


def test_fetch_images_opens_encoded_inputs_and_keeps_nesting(processor, tmp_path):
    path = tmp_path / "a.png"
    drawing().save(path)
    array = np.zeros((4, 4, 3), np.uint8)
    fetched = processor.fetch_images([[str(path)], [encoded(drawing()), array]])
    assert isinstance(fetched[0][0], PIL.Image.Image) and isinstance(fetched[1][0], PIL.Image.Image)
    assert fetched[1][1] is array


# ----------------------------------------------------------------------------------------------
# Conversion to RGB


def to_rgb(processor, image) -> np.ndarray:
    """Pixel values back to uint8 RGB, for checking the colour conversion on a 1:1 resize."""
    out = processor(image, return_tensors="pt", do_resize=False, do_normalize=False, do_rescale=False)
    return out["pixel_values"][0].permute(1, 2, 0).numpy()


def test_alpha_is_composited_on_white(processor):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 200  # red everywhere
    rgba[:2, :, 3] = 255  # opaque top half, transparent bottom half
    rgba[2:, :2, 3] = 128  # half transparent
    for image in (PIL.Image.fromarray(rgba, "RGBA"), rgba, torch.from_numpy(rgba).permute(2, 0, 1)):
        rgb = to_rgb(processor, image)
        assert rgb[0, 0].tolist() == [200, 0, 0]
        assert rgb[3, 3].tolist() == [255, 255, 255]
        assert abs(rgb[2, 0, 0] - round(0.502 * 200 + 0.498 * 255)) <= 1 and abs(rgb[2, 0, 1] - 127) <= 1
    la = PIL.Image.fromarray(rgba[..., [0, 3]], "LA")
    assert to_rgb(processor, la)[3, 3].tolist() == [255, 255, 255]


def test_palette_cmyk_bilevel_and_float_modes(processor):
    image = drawing(40, 30)
    reference = to_rgb(processor, image)
    palette = image.convert("P", palette=PIL.Image.Palette.ADAPTIVE, colors=256)
    assert np.abs(to_rgb(processor, palette).astype(int) - reference).max() < 40
    assert np.abs(to_rgb(processor, image.convert("CMYK")).astype(int) - reference).max() <= 1
    transparent = palette.copy()
    transparent.info["transparency"] = palette.getpixel((0, 0))  # background colour becomes transparent
    assert to_rgb(processor, transparent)[0, 0].tolist() == [255, 255, 255]
    bilevel = PIL.Image.new("1", (8, 8), 1)
    assert (to_rgb(processor, bilevel) == 255).all()
    float_mode = PIL.Image.fromarray(np.full((8, 8), 0.5, np.float32), "F")
    assert (to_rgb(processor, float_mode) == 128).all()


def test_16_bit_images_are_scaled_not_clipped(processor, tmp_path):
    ramp = np.linspace(0, 65535, 64 * 4).reshape(4, 64).astype(np.uint16)
    expected = np.round(ramp * (255 / 65535)).astype(np.uint8)
    image16 = PIL.Image.fromarray(ramp)
    assert image16.mode == "I;16"
    path = tmp_path / "ramp16.png"
    image16.save(path)
    for image in (image16, PIL.Image.open(path), ramp, str(path)):
        rgb = to_rgb(processor, image)
        np.testing.assert_array_equal(rgb[..., 0], expected)
        np.testing.assert_array_equal(rgb[..., 2], expected)


def test_exif_orientation_of_files_is_applied(processor):
    image = drawing(60, 30)
    exif = PIL.Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif, quality=95)
    rgb = to_rgb(processor, buffer.getvalue())
    assert rgb.shape == (60, 30, 3)


# ----------------------------------------------------------------------------------------------
# Errors


@pytest.mark.parametrize(
    ("image", "error", "match"),
    [
        (b"definitely not an image", ValueError, r"image 0 \(23 bytes\) is not a readable image \(corrupt"),
        (np.zeros((0, 5, 3), np.uint8), ValueError, r"image 0 is empty: 0x5 pixels \(height x width\)"),
        (np.zeros((5, 0), np.uint8), ValueError, r"image 0 is empty: 5x0 pixels"),
        (PIL.Image.new("RGB", (0, 7)), ValueError, r"image 0 is empty: 7x0 pixels"),
        (np.zeros((5, 6, 2), np.uint8), ValueError, r"image 0 has shape \(5, 6, 2\): neither its first nor"),
        (torch.zeros(6, 5, 5), ValueError, r"neither its first nor its last axis has 1, 3 or 4 channels"),
        (np.zeros((2, 3, 4, 5, 3), np.uint8), ValueError, r"image 0 has shape \(2, 3, 4, 5, 3\); expected \(H, W\)"),
        (np.array([[0.1, np.nan], [0.2, 0.3]]), ValueError, r"image 0 has 1 NaN or infinite values"),
        (np.array([[0.1, np.inf], [-np.inf, 0.3]], np.float32), ValueError, r"image 0 has 2 NaN or infinite values"),
        (np.full((4, 4, 3), 200.0), ValueError, r"image 0 is a float array with values in \[200, 200\]; float images"),
        (np.zeros((4, 4, 3), np.int64), TypeError, r"image 0 has dtype int64; expected uint8, uint16, bool or a float"),
        (torch.zeros(3, 4, 4, dtype=torch.int32), TypeError, r"image 0 has dtype int32"),
        (42, TypeError, r"image 0 is a int; expected a PIL image, a numpy array, a torch tensor"),
        ([np.zeros((4, 4, 3), np.uint8), {"url": "x"}], TypeError, r"image 1 is a dict; expected a PIL image"),
        ([], ValueError, r"no images were given \(an empty list\)"),
    ],
)
def test_bad_images(processor, image, error, match):
    with pytest.raises(error, match=match):
        processor(image, return_tensors="pt")


def test_wrong_channel_count_with_explicit_layout(processor):
    with pytest.raises(ValueError, match=r"image 0 has 2 channels \(shape \(4, 5, 2\)\); expected 1, 3 or 4"):
        processor(np.zeros((2, 4, 5), np.uint8), input_data_format="channels_first")


def test_corrupt_and_truncated_files_name_the_input(processor, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG but not really")
    with pytest.raises(ValueError, match=r"image 0 \('.*bad\.png'\) is not a readable image"):
        processor(str(bad))
    truncated = tmp_path / "truncated.png"
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)
    truncated.write_bytes(encoded(PIL.Image.fromarray(noise))[:300])
    with pytest.raises(ValueError, match=r"image 1 \('.*truncated\.png'\) could not be decoded \(truncated"):
        processor([drawing(), truncated])
    with pytest.raises(FileNotFoundError, match=r"image file '.*missing\.png' does not exist"):
        processor(str(tmp_path / "missing.png"))


def test_too_many_pixels_is_refused_before_decoding(processor):
    # 9000 x 9000 = 81M pixels > 8192^2: refused from the header, before the garbage pixel data is read
    match = r"image 0 \(\d+ bytes\) has 9000x9000 = 81000000 pixels, more than max_pixels=67108864"
    with pytest.raises(ValueError, match=match):
        processor(png_header_only(9000, 9000))
    # beyond PIL's own decompression-bomb limit: PIL refuses to open it, wrapped in a ValueError
    with pytest.raises(ValueError, match=r"image 0 \(\d+ bytes\) is too large to decode safely"):
        processor(png_header_only(50000, 50000))
    small = MuOmniImageProcessor(max_pixels=1000)
    with pytest.raises(ValueError, match=r"image 0 has 40x40 = 1600 pixels, more than max_pixels=1000"):
        small(np.zeros((40, 40, 3), np.uint8))
    with pytest.raises(ValueError, match=r"has 40x40 = 1600 pixels, more than max_pixels=1500"):
        processor(PIL.Image.new("RGB", (40, 40)), max_pixels=1500)
    with pytest.raises(ValueError, match=r"more than max_pixels=1000"):
        small.fetch_images([png_header_only(40, 40)])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"do_convert_rgb": False}, r"always converts images to RGB .* do_convert_rgb=False is not supported"),
        ({"size": {"shortest_edge": 224}}, r"size must give both height and width, got \{'shortest_edge': 224"),
        ({"max_pixels": 0}, r"max_pixels must be a positive integer, got 0"),
    ],
)
def test_bad_call_arguments(processor, kwargs, match):
    with pytest.raises(ValueError, match=match):
        processor(drawing(), **kwargs)


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match=r"max_pixels must be a positive integer, got -5"):
        MuOmniImageProcessor(max_pixels=-5)


# ----------------------------------------------------------------------------------------------
# Save / load


def test_save_pretrained_round_trip(tmp_path):
    processor = MuOmniImageProcessor(size={"height": 112, "width": 96}, max_pixels=4096 * 4096, image_mean=[0.5] * 3)
    processor.save_pretrained(tmp_path)
    images = [drawing(), np.asarray(drawing(33, 77))]
    for loaded in (MuOmniImageProcessor.from_pretrained(tmp_path), AutoImageProcessor.from_pretrained(tmp_path)):
        assert type(loaded) is MuOmniImageProcessor
        assert loaded.max_pixels == 4096 * 4096 and loaded.size.height == 112 and loaded.size.width == 96
        assert loaded.to_dict() == processor.to_dict()
        assert torch.equal(pixels(loaded, images), pixels(processor, images))


@pytest.mark.parametrize("config", [MuOmniConfig(), MuOmniVisionEncoderConfig()])
def test_auto_image_processor_from_model_config(tmp_path, config):
    config.save_pretrained(tmp_path)
    MuOmniImageProcessor().save_pretrained(tmp_path)
    assert type(AutoImageProcessor.from_pretrained(tmp_path)) is MuOmniImageProcessor
