"""Writers of tiny fake dataset trees in the real on-disk layouts (for the loader tests)."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
from PIL import Image

TILE = (16, 8)  # (width, height) of one modality tile / image in the fake trees


def write_jpg(path: Path, value: int, size: tuple[int, int] = TILE, mode: str = "RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    colour = (value, 255 - value, value // 2) if mode == "RGB" else value
    Image.new(mode, size, colour).save(path, "JPEG")
    return path


def write_tiled(path: Path, values: tuple[int, ...]) -> Path:
    """Modalities side by side, each one TILE wide, each tile a flat grey level."""
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.new("RGB", (TILE[0] * len(values), TILE[1]))
    for k, v in enumerate(values):
        im.paste((v, v, v), (k * TILE[0], 0, (k + 1) * TILE[0], TILE[1]))
    im.save(path, "JPEG")
    return path


def write_garbage(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"this is not a jpeg at all")
    return path


def write_wav(path: Path, seconds: float = 0.25, rate: int = 16000, freq: float = 440.0,
              width: int = 2) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * rate)) / rate
    pcm = (0.5 * np.sin(2 * np.pi * freq * t) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes() if width == 2 else pcm.astype("<i4").tobytes())
    return path


# ---- reid trees: ids are chosen so that every split has >= 3 ids and 2 cameras -------------

TILED_SPLITS = {"bounding_box_train": range(1, 11), "query": range(20, 23),
                "bounding_box_test": range(20, 23)}


def rgbnt100_tree(root: Path, tiles: int = 3) -> Path:
    """rgbir/<split>/<pid>_c<cam>_<n>.jpg, 2 cameras per id, ``tiles`` modalities."""
    for split, pids in TILED_SPLITS.items():
        for pid in pids:
            for cam in (1, 5):
                name = f"{pid:04d}_c{cam:03d}_{split[:2]}.jpg"
                write_tiled(root / "rgbir" / split / name,
                            tuple(40 * k + pid for k in range(tiles)))
    return root


def rgbnt201_name(pid: int, cam: int, n: int = 0) -> str:
    return f"{pid:06d}_cam{cam}_{n}_00.jpg"


def rgbnt201_tree(root: Path) -> Path:
    for split, pids in (("train_171", range(1, 11)), ("test", range(50, 53))):
        for pid in pids:
            for cam in (1, 3):
                for mod in ("RGB", "NI", "TI"):
                    write_jpg(root / split / mod / rgbnt201_name(pid, cam), pid)
    return root


def msvr310_name(vid: int, scene: int, cam: int, n: int = 0) -> str:
    return f"{vid:04d}_s{scene:03d}_v{cam}_{n:04d}.jpg"


def msvr310_tree(root: Path) -> Path:
    splits = {"bounding_box_train": range(1, 11), "query3": range(30, 33),
              "bounding_box_test": range(30, 33)}
    for split, vids in splits.items():
        for vid in vids:
            for cam, scene in ((0, 7), (2, 9)):
                for mod in ("vis", "ni", "th"):
                    write_jpg(root / split / f"{vid:04d}" / mod / msvr310_name(vid, scene, cam),
                              vid)
    return root


# ---- audio-visual trees ---------------------------------------------------------------------

CREMAD_EMOTIONS = ("NEU", "HAP", "SAD", "FEA", "DIS", "ANG")


def cremad_clip(actor: int, emotion: str) -> str:
    return f"{actor}_IEO_{emotion}_XX"


def cremad_tree(root: Path, actors: range = range(1001, 1005)) -> Path:
    """Each emotion said by each actor; the last actor goes to test.csv."""
    rows = {"train": [], "test": []}
    for actor in actors:
        for e in CREMAD_EMOTIONS:
            clip = cremad_clip(actor, e)
            rows["test" if actor == actors[-1] else "train"].append(f"{clip},{e}")
            write_wav(root / "AudioWAV" / f"{clip}.wav", freq=200 + 10 * (actor % 7))
            for k in (1, 2):
                write_jpg(root / "Image-01-FPS" / clip / f"frame_{k:05d}.jpg", 10 * k)
    (root / "train.csv").write_text("\ufeff" + "\n".join(rows["train"]) + "\n")
    (root / "test.csv").write_text("\n".join(rows["test"]) + "\n")
    return root


AVE_CATEGORIES = ("Church bell", "Dog", "Violin, fiddle")


def ave_line(category: str, video: str) -> str:
    return f"{category}&{video}&good&0&10"


def ave_tree(root: Path, per_split: int = 2, spectrogram: str = ".npy") -> Path:
    """``per_split`` videos per category and split; Annotations.txt lists them all."""
    lines: dict[str, list[str]] = {"trainSet": [], "valSet": [], "testSet": []}
    rng = np.random.default_rng(0)
    for s, split in enumerate(lines):
        for c, cat in enumerate(AVE_CATEGORIES):
            for k in range(per_split):
                video = f"v{s}{c}{k}xYz"
                lines[split].append(ave_line(cat, video))
                audio = root / "Audio-1004-SE" / f"{video}{spectrogram}"
                audio.parent.mkdir(parents=True, exist_ok=True)
                if spectrogram == ".npy":
                    np.save(audio, rng.standard_normal((257, 1004)).astype(np.float32))
                else:
                    write_wav(audio, seconds=0.5)
                for f in range(1, 11):
                    write_jpg(root / "Image-01-FPS-SE" / video / f"frame_{f:05d}.jpg", 20 * f)
    header = "Category&VideoID&Quality&StartTime&EndTime"
    everything = [ln for split in lines.values() for ln in split]
    (root / "Annotations.txt").write_text("\n".join([header, *everything]) + "\n")
    for split, ls in lines.items():
        (root / f"{split}.txt").write_text("\n".join(ls) + "\n")
    return root
