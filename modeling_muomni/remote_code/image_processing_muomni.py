# GENERATED FILE - DO NOT EDIT.
# Flat copy of `muomni.processing.image_processing_muomni` for loading with `trust_remote_code=True`,
# written by `python -m muomni.hub export-remote-code`. Edit the package source and regenerate.
"""`MuOmniImageProcessor`: any image-like input -> `pixel_values` (B, 3, 224, 224) for the ViT-Tiny encoder.

A PIL/NumPy-backend processor in the transformers 5.x style (`PilBackend`, like `CLIPImageProcessorPil`),
so the package needs neither torchvision nor a GPU. The pipeline per image:

1. read and check: file path, URL, raw bytes, PIL image, numpy array or torch tensor -> RGB uint8
   `(H, W, 3)` (rules below), refusing empty, oversized (`max_pixels`), corrupt or NaN input;
2. resize to `size` (224 x 224, bicubic; the aspect ratio is not kept, nothing is cropped);
3. rescale by 1/255 and normalise with the OpenAI CLIP mean and std (the vision tower is trained
   CLIP-style, stage C).

For uint8 / PIL input this is exactly `CLIPImageProcessorPil(size={"height": 224, "width": 224},
do_center_crop=False)`.

Conversion to RGB:
- PIL modes: "L", "P", "CMYK", "YCbCr", ... use PIL's `convert("RGB")`; modes with alpha ("RGBA",
  "LA", "PA", "P" with a transparency entry) are composited on white, as transformers' `convert_to_rgb`
  does; 16/32-bit integer modes ("I;16*", "I") are read as 16-bit (0..65535) and scaled by 255/65535
  (PIL's own conversion would clip them); "F" follows the float-array rule.
- Arrays and tensors: `(H, W)` is grayscale. A 3-D numpy array is channels-last `(H, W, C)` when its
  last axis has 1, 3 or 4 entries, otherwise channels-first; a 3-D torch tensor is channels-first
  `(C, H, W)` when its first axis has 1, 3 or 4 entries, otherwise channels-last. Pass
  `input_data_format="channels_first"`/`"channels_last"` to decide it yourself. C = 1 is grayscale,
  C = 4 is RGBA (composited on white). A 4-D array or tensor is a batch of such images.
- dtypes: uint8 as is; bool as 0/255; uint16 as 16-bit; floats must be finite and in [0, 1] and are
  quantised to 8 bits (round(x * 255)), like every PIL-backend processor.
- Files and bytes are transposed according to their EXIF orientation, like `transformers.image_utils.load_image`.
"""

import io
import os
from collections.abc import Iterable

import numpy as np
import PIL.Image
import PIL.ImageOps
import torch
from transformers.image_processing_backends import PilBackend
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, ChannelDimension, PILImageResampling
from transformers.processing_utils import ImagesKwargs

# Integer PIL modes whose pixels are 16-bit (or wider) and that PIL's convert("RGB") would clip at 255.
_WIDE_INTEGER_MODES = ("I", "I;16", "I;16L", "I;16B", "I;16N")


class MuOmniImageProcessorKwargs(ImagesKwargs, total=False):
    """`ImagesKwargs` plus `max_pixels`: the largest accepted input, height * width, checked before decoding."""

    max_pixels: int | None


class MuOmniImageProcessor(PilBackend):
    r"""Image processor for the MuOmni vision encoder (PIL backend, no torchvision).

    Args (all optional, defaults are the class attributes below; each can also be given per call):
        size (`dict`, defaults to `{"height": 224, "width": 224}`): output size; must have height and width.
        resample (`PILImageResampling`, defaults to `BICUBIC`).
        do_resize / do_rescale / do_normalize (`bool`, default `True`); `rescale_factor` 1/255.
        image_mean / image_std (defaults to the OpenAI CLIP values).
        max_pixels (`int`, defaults to 8192 * 8192): an input with more pixels is refused; files and
            bytes are checked from their header, before decoding (a guard against decompression bombs;
            PIL's own `Image.MAX_IMAGE_PIXELS` limit still applies on top of it).

    Calling it on one image or a (nested) list of images returns a [`BatchFeature`] with
    `pixel_values`: a `(B, 3, H, W)` float32 tensor for `return_tensors="pt"` (`(B, 3, 224, 224)` by
    default), or a list of `(3, H, W)` arrays for `return_tensors=None`. See the module docstring for
    the accepted inputs and how they become RGB.
    """

    valid_kwargs = MuOmniImageProcessorKwargs
    model_input_names = ["pixel_values"]

    resample = PILImageResampling.BICUBIC
    image_mean = OPENAI_CLIP_MEAN
    image_std = OPENAI_CLIP_STD
    size = {"height": 224, "width": 224}
    do_resize = True
    do_center_crop = False
    do_rescale = True
    rescale_factor = 1 / 255
    do_normalize = True
    do_convert_rgb = True
    max_pixels = 8192 * 8192

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._validate_max_pixels(self.max_pixels)

    @staticmethod
    def _validate_max_pixels(max_pixels) -> None:
        if not isinstance(max_pixels, int) or isinstance(max_pixels, bool) or max_pixels <= 0:
            raise ValueError(f"max_pixels must be a positive integer, got {max_pixels!r}")

    def _validate_preprocess_kwargs(self, do_convert_rgb=None, do_resize=None, size=None, max_pixels=None, **kwargs):
        if do_convert_rgb is False:
            raise ValueError(
                "MuOmniImageProcessor always converts images to RGB (the vision encoder takes 3 channels); "
                "do_convert_rgb=False is not supported"
            )
        if do_resize and (size is None or not size.height or not size.width):
            raise ValueError(f"size must give both height and width, got {dict(size) if size else size}")
        self._validate_max_pixels(max_pixels)
        super()._validate_preprocess_kwargs(do_resize=do_resize, size=size, **kwargs)

    def fetch_images(self, image_url_or_urls):
        """Open paths, URLs and bytes as PIL images (checked against `max_pixels`), keeping the nesting.

        Other images (PIL, numpy, torch) pass through unchanged; anything else is a `TypeError`.
        """
        return _map_nested(image_url_or_urls, lambda image, name: _open_if_encoded(image, name, self.max_pixels))

    def _prepare_image_like_inputs(
        self, images, *args, expected_ndims: int = 3, max_pixels=None, input_data_format=None, **kwargs
    ) -> list[np.ndarray]:
        """Flatten the (nested) input and turn every image into a channels-first RGB uint8 array `(3, H, W)`."""
        max_pixels = self.max_pixels if max_pixels is None else max_pixels
        if input_data_format is not None:
            input_data_format = ChannelDimension(input_data_format)
        leaves = _flatten(images)
        if not leaves:
            raise ValueError("no images were given (an empty list)")
        arrays = []
        for index, image in enumerate(leaves):
            name = _describe(image, index)
            image = _open_if_encoded(image, name, max_pixels)
            rgb = to_rgb_array(image, name, max_pixels, input_data_format)  # (H, W, 3)
            arrays.append(np.ascontiguousarray(rgb.transpose(2, 0, 1)))  # (3, H, W), the backend's layout
        return arrays


def to_rgb_array(
    image, name: str = "image", max_pixels: int = 8192 * 8192, input_data_format: ChannelDimension | None = None
) -> np.ndarray:
    """A PIL image, numpy array or torch tensor -> RGB uint8 array `(H, W, 3)` (rules in the module docstring)."""
    if isinstance(image, PIL.Image.Image):
        _check_size(image.height, image.width, name, max_pixels)
        return _pil_to_rgb_array(image, name, max_pixels)
    if isinstance(image, torch.Tensor):
        tensor = image.detach().cpu()
        array = (tensor.float() if tensor.dtype == torch.bfloat16 else tensor).numpy()
        channels_first_default = True
    elif isinstance(image, np.ndarray):
        array, channels_first_default = image, False
    else:
        raise TypeError(
            f"{name} is a {type(image).__name__}; expected a PIL image, a numpy array, a torch tensor, "
            "a file path, a URL or encoded image bytes"
        )
    return _array_to_rgb(array, name, max_pixels, input_data_format, channels_first_default)


def _pil_to_rgb_array(image: PIL.Image.Image, name: str, max_pixels: int) -> np.ndarray:
    if image.mode in _WIDE_INTEGER_MODES:
        wide = np.asarray(image).astype(np.float64)
        return _gray_to_rgb(np.round(np.clip(wide, 0, 65535) * (255 / 65535)).astype(np.uint8))
    if image.mode == "F":
        return _array_to_rgb(np.asarray(image), name, max_pixels, None, False)
    has_alpha = "A" in image.getbands() or image.info.get("transparency") is not None
    try:
        if has_alpha:
            rgba = image.convert("RGBA")
            white = PIL.Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return np.asarray(PIL.Image.alpha_composite(white, rgba).convert("RGB"))
        return np.asarray(image.convert("RGB"))
    except ValueError as err:
        raise ValueError(f"{name} has PIL mode {image.mode!r}, which cannot be converted to RGB: {err}") from None


def _array_to_rgb(
    array: np.ndarray,
    name: str,
    max_pixels: int,
    input_data_format: ChannelDimension | None,
    channels_first_default: bool,
) -> np.ndarray:
    if array.ndim == 2:
        array = array[..., None]  # (H, W, 1)
    elif array.ndim == 3:
        array = _to_channels_last(array, name, input_data_format, channels_first_default)
    else:
        raise ValueError(
            f"{name} has shape {tuple(array.shape)}; expected (H, W), (H, W, C) or (C, H, W) with C in 1, 3, 4"
        )
    height, width, channels = array.shape
    if channels not in (1, 3, 4):
        raise ValueError(f"{name} has {channels} channels (shape {tuple(array.shape)}); expected 1, 3 or 4")
    _check_size(height, width, name, max_pixels)
    array = _to_uint8(array, name)
    if channels == 1:
        return _gray_to_rgb(array[..., 0])
    if channels == 4:
        alpha = array[..., 3:].astype(np.float64) / 255
        return np.round(alpha * array[..., :3] + (1 - alpha) * 255).astype(np.uint8)  # composite on white
    return array


def _to_channels_last(
    array: np.ndarray, name: str, input_data_format: ChannelDimension | None, channels_first_default: bool
) -> np.ndarray:
    if input_data_format == ChannelDimension.FIRST:
        return np.moveaxis(array, 0, -1)
    if input_data_format == ChannelDimension.LAST:
        return array
    first, last = array.shape[0] in (1, 3, 4), array.shape[-1] in (1, 3, 4)
    if first and (channels_first_default or not last):
        return np.moveaxis(array, 0, -1)
    if last:
        return array
    raise ValueError(
        f"{name} has shape {tuple(array.shape)}: neither its first nor its last axis has 1, 3 or 4 channels"
    )


def _to_uint8(array: np.ndarray, name: str) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if array.dtype == np.uint16:
        return np.round(array.astype(np.float64) * (255 / 65535)).astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        finite = np.isfinite(array)
        if not finite.all():
            raise ValueError(f"{name} has {int((~finite).sum())} NaN or infinite values")
        low, high = float(array.min()), float(array.max())
        if low < 0 or high > 1:
            raise ValueError(
                f"{name} is a float array with values in [{low:g}, {high:g}]; float images must be in [0, 1] "
                "(pass uint8 for 0..255 data)"
            )
        return np.round(array.astype(np.float64) * 255).astype(np.uint8)
    raise TypeError(f"{name} has dtype {array.dtype}; expected uint8, uint16, bool or a float dtype in [0, 1]")


def _gray_to_rgb(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[..., None], 3, axis=-1)  # (H, W) -> (H, W, 3)


def _check_size(height: int, width: int, name: str, max_pixels: int) -> None:
    if height == 0 or width == 0:
        raise ValueError(f"{name} is empty: {height}x{width} pixels (height x width)")
    if height * width > max_pixels:
        raise ValueError(
            f"{name} has {height}x{width} = {height * width} pixels, more than max_pixels={max_pixels}; "
            "downscale it first or raise max_pixels"
        )


def _open_if_encoded(image, name: str, max_pixels: int):
    """Paths, URLs and bytes -> a decoded PIL image; anything else is returned as is (or a TypeError)."""
    if isinstance(image, (str, os.PathLike)):
        path = os.fspath(image)
        if path.startswith(("http://", "https://")):
            from transformers.image_utils import load_image

            return load_image(path)  # downloaded and decoded by transformers; the size check follows
        if not os.path.isfile(path):
            raise FileNotFoundError(f"image file {path!r} does not exist")
        with open(path, "rb") as handle:
            return _decode(handle.read(), name, max_pixels)
    if isinstance(image, (bytes, bytearray, memoryview)):
        return _decode(bytes(image), name, max_pixels)
    if isinstance(image, (PIL.Image.Image, np.ndarray, torch.Tensor)):
        return image
    raise TypeError(
        f"{name} is a {type(image).__name__}; expected a PIL image, a numpy array, a torch tensor, "
        "a file path, a URL or encoded image bytes"
    )


def _decode(data: bytes, name: str, max_pixels: int) -> PIL.Image.Image:
    """Open lazily, check the header's size against `max_pixels`, then decode and apply EXIF orientation.

    Files are read into memory first (an encoded image is small even when its pixels are not), so no
    file handle outlives a failed decode.
    """
    try:
        image = PIL.Image.open(io.BytesIO(data))
    except PIL.Image.DecompressionBombError as err:
        raise ValueError(f"{name} is too large to decode safely: {err}") from None
    except PIL.UnidentifiedImageError as err:
        raise ValueError(f"{name} is not a readable image (corrupt or unsupported format): {err}") from None
    _check_size(image.height, image.width, name, max_pixels)
    try:
        image.load()
    except (OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"{name} could not be decoded (truncated or corrupt): {err}") from None
    return PIL.ImageOps.exif_transpose(image)


def _describe(image, index: int) -> str:
    if isinstance(image, (str, os.PathLike)):
        return f"image {index} ({os.fspath(image)!r})"
    if isinstance(image, (bytes, bytearray, memoryview)):
        return f"image {index} ({len(image)} bytes)"
    return f"image {index}"


def _is_batch_array(value) -> bool:
    return isinstance(value, (np.ndarray, torch.Tensor)) and value.ndim == 4


def _flatten(images) -> list:
    """Nested lists / tuples and 4-D arrays -> a flat list of single images."""
    if isinstance(images, (list, tuple)) or _is_batch_array(images):
        return [leaf for item in images for leaf in _flatten(item)]
    return [images]


def _map_nested(images, fn, counter: Iterable[int] | None = None):
    """Apply `fn(image, name)` to every image of a nested list, keeping the nesting."""
    counter = iter(range(10**12)) if counter is None else counter
    if isinstance(images, (list, tuple)):
        return [_map_nested(item, fn, counter) for item in images]
    index = next(counter)
    return fn(images, _describe(images, index))


__all__ = ["MuOmniImageProcessor", "MuOmniImageProcessorKwargs", "to_rgb_array"]
