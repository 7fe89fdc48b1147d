"""The JPEG fast path gives PIL's pixels bit for bit, and hands everything else back to PIL."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from trainers.data.contract import DataError
from trainers.data.images import jpeg_pixels, read_image

SIZE = (64, 48)  # (height, width)


def photo(seed: int, mode: str = "RGB", size: tuple[int, int] = SIZE) -> Image.Image:
    """Smooth random content plus noise: chroma and fine detail, like a photo."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (8, 6, 3), dtype=np.uint8)
    big = np.asarray(Image.fromarray(small).resize((size[1], size[0]), Image.Resampling.BICUBIC))
    noisy = np.clip(big.astype(int) + rng.integers(-20, 21, big.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(noisy).convert(mode)


def jpeg(im: Image.Image, **save: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", **save)
    return buf.getvalue()


def pil_pixels(data: bytes, mode: str, size: tuple[int, int] = SIZE) -> torch.Tensor:
    im = Image.open(io.BytesIO(data)).convert(mode)
    if im.size != (size[1], size[0]):
        im = im.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    a = np.asarray(im)
    return torch.from_numpy(np.array(a.transpose(2, 0, 1) if a.ndim == 3 else a[None]))


ENCODINGS = [
    ("RGB", {"quality": 90}),
    ("RGB", {"quality": 75, "subsampling": 0}),  # 4:4:4
    ("RGB", {"quality": 95, "subsampling": 1}),  # 4:2:2
    ("RGB", {"quality": 50, "progressive": True}),
    ("RGB", {"quality": 85, "optimize": True}),
    ("L", {"quality": 90}),
    ("L", {"quality": 60, "progressive": True}),
]


@pytest.mark.parametrize(("file_mode", "save"), ENCODINGS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fast_path_pixels_equal_pils(tmp_path: Path, file_mode: str, save: dict,
                                     seed: int) -> None:
    data = jpeg(photo(seed, file_mode), **save)
    for mode in (("RGB", "L") if file_mode == "L" else ("RGB",)):
        fast = jpeg_pixels(data, mode, SIZE)
        assert fast is not None, f"{file_mode} file as {mode} should take the fast path"
        assert torch.equal(fast, pil_pixels(data, mode))
    path = tmp_path / "a.jpg"
    path.write_bytes(data)
    channels = 1 if file_mode == "L" else 3
    assert torch.equal(read_image(path, SIZE, channels, raw=True),
                       pil_pixels(data, "L" if channels == 1 else "RGB"))


def test_what_pil_would_do_differently_goes_to_pil(tmp_path: Path) -> None:
    colour = jpeg(photo(3))
    png = io.BytesIO()
    photo(3).save(png, "PNG")
    cases = {
        "colour file wanted grey": (colour, "L", SIZE),
        "other size (PIL resizes)": (colour, "RGB", (32, 24)),
        "png": (png.getvalue(), "RGB", SIZE),
        "cmyk": (jpeg(photo(3, "CMYK")), "RGB", SIZE),
        "truncated": (colour[: len(colour) // 2], "RGB", SIZE),
    }
    for name, (data, mode, size) in cases.items():
        assert jpeg_pixels(data, mode, size) is None, name
    # and read_image then gives PIL's result
    for name in ("colour file wanted grey", "other size (PIL resizes)", "png", "cmyk"):
        data, mode, size = cases[name]
        path = tmp_path / f"{name.split()[0]}.jpg"
        path.write_bytes(data)
        got = read_image(path, size, 3 if mode == "RGB" else 1, raw=True)
        assert torch.equal(got, pil_pixels(data, mode, size)), name


def test_damaged_jpegs_are_named_by_pil(tmp_path: Path) -> None:
    data = jpeg(photo(4))
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"cut\.jpg: cannot read image"):
        read_image(truncated, SIZE, 3)
    with pytest.raises(DataError, match=r"gone\.jpg: cannot read image"):
        read_image(tmp_path / "gone.jpg", SIZE, 3)


def test_a_jpeg_declaring_a_huge_image_is_never_decoded(tmp_path: Path) -> None:
    data = bytearray(jpeg(photo(5)))
    sof = data.index(b"\xff\xc0")  # baseline frame header: length, precision, height, width
    data[sof + 5: sof + 9] = (60000).to_bytes(2, "big") + (60000).to_bytes(2, "big")
    assert jpeg_pixels(bytes(data), "RGB", SIZE) is None
    path = tmp_path / "bomb.jpg"
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"bomb\.jpg: cannot read image"):
        read_image(path, SIZE, 3)
