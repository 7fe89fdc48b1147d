"""Image files to tensors: decoding (PIL, or libjpeg-turbo for JPEGs it reads as PIL would),
resizing, and the normalisation every image loader shares.

JPEG fast path. Reid and frame datasets are folders of small JPEGs, and decoding them is most
of a file-backed epoch. PIL decodes them with the same libjpeg-turbo, but every image also pays
for PIL's own header parser, its tile machinery and a copy out of the PIL image: for a
256 x 128 photo about 0.24 ms against 0.16 ms through ``simplejpeg``, and 0.15 against 0.07 ms
for a grey one (``benchmarks.input_pipeline`` measures the whole pipeline). The pixels are the
same, bit for bit (both use libjpeg-turbo's accurate integer DCT and smooth chroma upsampling;
tested on baseline, progressive and optimised files, 4:2:0, 4:2:2, 4:4:4 and grey).
:func:`jpeg_pixels` answers ``None`` whenever PIL would do something else, and the file is
then read by PIL as before: a file that is not a JPEG, or not already at the wanted size (PIL
resizes), a colour JPEG wanted as grey (PIL's ``L`` conversion rounds differently from
libjpeg's), CMYK or Adobe RGB files, and every damaged file (PIL then names the problem, with
the loaders' ``on_error`` choice). Only a file already at the target size is decoded there,
so a small file that declares a huge image never reaches the decoder.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import simplejpeg
import torch
from PIL import Image

from trainers.data.contract import DataError

# Pixel normalisation of every image loader: ImageNet statistics for 3-channel images (what
# pretrained backbones expect); for 1-channel NIR/TIR the mean of those channel statistics.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
GRAY_MEAN = (0.449,)
GRAY_STD = (0.226,)
JPEG_MAGIC = b"\xff\xd8\xff"
# (file colour space, wanted PIL mode) -> simplejpeg's output colour space; other pairs go to PIL
_SPACES = {("YCbCr", "RGB"): "RGB", ("Gray", "RGB"): "RGB", ("Gray", "L"): "GRAY"}


def jpeg_pixels(data: bytes, mode: str, size: tuple[int, int]) -> torch.Tensor | None:
    """The JPEG in ``data`` as a (C, H, W) uint8 tensor in PIL ``mode`` (``RGB`` or ``L``) when
    it is a JPEG of ``size`` (height, width) that this path decodes as PIL would, else None."""
    if not data.startswith(JPEG_MAGIC):
        return None
    try:
        height, width, space, _ = simplejpeg.decode_jpeg_header(data)
        target = _SPACES.get((space, mode))
        if target is None or (height, width) != tuple(size):
            return None
        pixels = simplejpeg.decode_jpeg(data, colorspace=target, strict=True)
    except ValueError:  # damaged or unusual: PIL reads it and reports what is wrong
        return None
    return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))


def decode_image(path: Path, mode: str = "RGB", data: bytes | None = None) -> Image.Image:
    """Fully decode an image (so truncated files fail here, not during training), in ``mode``
    (a grey file read as ``L`` is not widened to RGB and back); ``data``: the file's bytes,
    already read."""
    try:
        with Image.open(path if data is None else io.BytesIO(data)) as im:
            im.load()
            return im if im.mode == mode else im.convert(mode)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise DataError(
            f"{path}: cannot read image ({e}); replace or re-extract the file"
        ) from e


def image_tensor(im: Image.Image, size: tuple[int, int], channels: int,
                 mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None) -> torch.Tensor:
    """(C, H, W) float tensor: bilinear resize to ``size``, scale to [0, 1], normalise."""
    return normalise(image_bytes(im, size, channels), mean, std)


def image_bytes(im: Image.Image, size: tuple[int, int], channels: int) -> torch.Tensor:
    """(C, H, W) uint8 tensor: the image resized (bilinear) to ``size``, not yet normalised.
    A quarter of the float bytes: what worker processes hand to the training process."""
    mode = "RGB" if channels == 3 else "L"
    im = im if im.mode == mode else im.convert(mode)
    if im.size != (size[1], size[0]):  # PIL copies on a resize to the same size
        im = im.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    pixels = np.asarray(im)  # (H, W, C) or (H, W); channels first below (numpy: 2-3x torch)
    chw = pixels.transpose(2, 0, 1) if channels == 3 else pixels[None]
    return torch.from_numpy(np.ascontiguousarray(chw) if chw.flags.writeable else chw.copy())


def normalise(x: torch.Tensor, mean: Sequence[float] | None = None,
              std: Sequence[float] | None = None) -> torch.Tensor:
    """uint8 images (..., C, H, W) -> float32 scaled to [0, 1] and normalised with ``mean``
    and ``std`` (default: ImageNet for 3 channels, grey for 1); one image or a whole batch,
    with the same float results either way."""
    channels = x.shape[-3]
    mean = mean if mean is not None else (IMAGENET_MEAN if channels == 3 else GRAY_MEAN)
    std = std if std is not None else (IMAGENET_STD if channels == 3 else GRAY_STD)
    m = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
    y = x.to(torch.float32, copy=True)  # in place from here: the same floats as
    return y.div_(255.0).sub_(m).div_(s)  # (x / 255 - m) / s, 2-3x faster on a whole batch


def normalise_images(x: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A batch of :func:`image_bytes` images per modality, normalised (``RecordReader.finish``)."""
    return {k: normalise(v) for k, v in x.items()}


def read_image(path: Path, size: tuple[int, int], channels: int,
               raw: bool = False) -> torch.Tensor:
    """The image as a normalised float tensor, or as uint8 (``raw``: normalised later); JPEGs
    already at ``size`` are decoded by :func:`jpeg_pixels`, everything else by PIL."""
    mode = "RGB" if channels == 3 else "L"
    try:
        data = path.read_bytes()
    except OSError:
        data = None  # PIL names the problem below
    x = jpeg_pixels(data, mode, size) if data is not None else None
    if x is None:
        x = image_bytes(decode_image(path, mode, data), size, channels)
    return x if raw else normalise(x)
