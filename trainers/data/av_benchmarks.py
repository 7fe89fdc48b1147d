"""Audio-visual classification benchmarks: CREMA-D (``"cremad"``) and AVE (``"ave"``).

Both read the on-disk layout the OGM-GE / PMR / ReconBoost code uses after its preprocessing,
so a tree prepared for those codes loads unchanged. Samples are ``{"audio": (1, F, T)
log spectrogram, "visual": (3 * num_frames, H, W) frames stacked as channels}``; frame k is
channels 3k..3k+2. Samples are the OGM-GE test-time view (resize to ``image_size``, scale to
[0, 1], ImageNet mean/std); the train recipe (``trainers.data.augment``) crops and flips the
frames of training batches; ``cache_dir`` caches decoded samples (``trainers.data.cache``).

CREMA-D, ``root`` holds::

    train.csv, test.csv          rows "<clip>,<EMOTION>" without header (the OGM-GE split
                                 files data/CREMAD/{train,test}.csv; a UTF-8 BOM is fine)
    AudioWAV/<clip>.wav          the release's 16-bit PCM WAVs
    Image-01-FPS/<clip>/*.jpg    frames at 1 fps, made once from the release's VideoFlash/:
      for f in VideoFlash/*.flv; do c=$(basename "$f" .flv); mkdir -p "Image-01-FPS/$c";
        ffmpeg -loglevel error -i "$f" -vf fps=1 "Image-01-FPS/$c/frame_%05d.jpg"; done

  Classes (OGM-GE order): NEU HAP SAD FEA DIS ANG -> 0..5. Audio (OGM-GE recipe): mono,
  resampled to 22.05 kHz (FFT resampling here; librosa's soxr differs slightly), tiled to
  fill 3 s and cut at 3 s, clipped to [-1, 1], STFT n_fft 512 / hop 353 / periodic Hann /
  centred with reflect padding, log(|STFT| + 1e-7) -> (1, 257, 188). CREMA-D ships only
  train/test lists, so ``val`` is a seeded, class-stratified ``val_fraction`` of train.

AVE, ``root`` holds::

    trainSet.txt, valSet.txt, testSet.txt    lines "Category&VideoID&Quality&Start&End"
    Annotations.txt                          optional: the same lines for all videos
    Audio-1004-SE/<VideoID>.npy | .pkl | .wav   ``audio_dir``
    Image-01-FPS-SE/<VideoID>/*.jpg             ``frames_dir``, frames at 1 fps

  Classes: the sorted category names of Annotations.txt, or of the three split files when it
  is absent (28 in the release). Whole-clip labels: Quality/Start/End are not used (as in
  OGM-GE). The spectrogram is (1, 257, 1004): read from a .npy (preferred) or a pickled
  array as OGM-GE's ``obtain_audio_spectrogram.py`` writes it (only numpy objects are
  unpickled), or computed from a 16-bit WAV with the same recipe: 22.05 kHz, tiled and cut
  to 160000 samples, clipped, scipy-style PSD spectrogram (Tukey(0.25) window, 512-sample
  segments every 159, constant detrend, density scaling), log(. + 1e-7), then standardised
  per clip. OGM-GE's folder names (``audio_spec``, ``visual``) work via the arguments.

Frames: ``num_frames`` frames at evenly spaced positions of the sorted frame files (index
``k * n // num_frames``; OGM-GE's AVE picks 1, 4, 7 of 10 the same way); CREMA-D uses one
frame by default (the first), AVE three.
"""

from __future__ import annotations

import csv
import wave
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch

from trainers.data import register_dataset
from trainers.data.arrays import load_array
from trainers.data.cache import DatasetCache
from trainers.data.contract import DataBundle, DataError, DatasetSpec, ModalitySpec
from trainers.data.images import read_image
from trainers.data.loading import (
    OnError,
    Problems,
    Reader,
    Record,
    check_choice,
    check_fraction,
    check_size,
    image_files,
    inside,
    make_split,
    plain_name,
    stratified_holdout,
    usable,
)

VERSION = "1"
CREMAD_CLASSES = ("NEU", "HAP", "SAD", "FEA", "DIS", "ANG")
SAMPLE_RATE = 22050
CREMAD_SPEC = (257, 188)
AVE_SPEC = (257, 1004)


# ---- audio ---------------------------------------------------------------------------------

def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """Mono float32 samples in [-1, 1) and the sample rate of a 16-bit PCM WAV."""
    try:
        with wave.open(str(path), "rb") as w:
            width, channels, rate = w.getsampwidth(), w.getnchannels(), w.getframerate()
            raw = w.readframes(w.getnframes())
    except (wave.Error, EOFError, OSError) as e:
        raise DataError(f"{path}: cannot read WAV ({e}); re-extract it as 16-bit PCM") from e
    if width != 2:
        raise DataError(f"{path}: {8 * width}-bit WAV, expected 16-bit PCM; convert with "
                        "ffmpeg -i in.wav -acodec pcm_s16le out.wav")
    x = np.frombuffer(raw[: len(raw) // 2 * 2], dtype="<i2").astype(np.float32) / 32768.0
    x = x[: len(x) // channels * channels].reshape(-1, channels).mean(axis=1)
    if x.size == 0:
        raise DataError(f"{path}: WAV holds no samples")
    return x, rate


def resample(x: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Band-limited resampling through the FFT (what scipy.signal.resample does)."""
    if rate == target:
        return x
    n = max(1, round(len(x) * target / rate))
    spec = np.fft.rfft(x)
    out = np.zeros(n // 2 + 1, dtype=spec.dtype)
    k = min(len(spec), len(out))
    out[:k] = spec[:k]
    return (np.fft.irfft(out, n) * (n / len(x))).astype(np.float32)


def fill(x: np.ndarray, n: int, min_repeats: int) -> np.ndarray:
    """Tile (at least ``min_repeats`` times, as OGM-GE does) and cut to ``n`` samples."""
    reps = max(min_repeats, -(-n // len(x)))
    return np.clip(np.tile(x, reps)[:n], -1.0, 1.0)


def cremad_spectrogram(path: Path) -> torch.Tensor:
    """OGM-GE's CREMA-D audio input: (1, 257, 188) log-magnitude STFT of 3 s at 22.05 kHz."""
    x, rate = read_wav(path)
    x = fill(resample(x, rate, SAMPLE_RATE), 3 * SAMPLE_RATE, 3)
    stft = torch.stft(torch.from_numpy(x), n_fft=512, hop_length=353,
                      window=torch.hann_window(512), center=True, pad_mode="reflect",
                      return_complex=True)
    return torch.log(stft.abs() + 1e-7).unsqueeze(0)


def tukey(n: int, alpha: float) -> np.ndarray:
    """Periodic Tukey window, as scipy.signal.get_window(('tukey', alpha), n) returns it."""
    m = n + 1
    k = np.arange(m, dtype=np.float64)
    width = int(np.floor(alpha * (m - 1) / 2.0))
    w = np.ones(m)
    w[: width + 1] = 0.5 * (1 + np.cos(np.pi * (-1 + 2.0 * k[: width + 1] / alpha / (m - 1))))
    tail = k[m - width - 1:]
    w[m - width - 1:] = 0.5 * (1 + np.cos(np.pi * (-2.0 / alpha + 1 + 2.0 * tail / alpha
                                                  / (m - 1))))
    return w[:-1]


def psd_spectrogram(x: np.ndarray, fs: int, nperseg: int = 512,
                    noverlap: int = 353) -> np.ndarray:
    """scipy.signal.spectrogram(x, fs, nperseg, noverlap) with its defaults: (F, T) PSD."""
    seg = np.lib.stride_tricks.sliding_window_view(x.astype(np.float64), nperseg)
    seg = seg[:: nperseg - noverlap]
    seg = seg - seg.mean(axis=1, keepdims=True)
    win = tukey(nperseg, 0.25)
    psd = np.abs(np.fft.rfft(seg * win, axis=1)) ** 2 / (fs * (win ** 2).sum())
    psd[:, 1:-1] *= 2.0  # one-sided: fold the negative frequencies (not DC, not Nyquist)
    return psd.T


def ave_spectrogram_from_wav(path: Path) -> np.ndarray:
    """OGM-GE's AVE audio input computed from a WAV: standardised log PSD, (257, 1004)."""
    x, rate = read_wav(path)
    x = fill(resample(x, rate, SAMPLE_RATE), 160000, 10)
    spec = np.log(psd_spectrogram(x, SAMPLE_RATE) + 1e-7)
    return (spec - spec.mean()) / (spec.std() + 1e-9)


def ave_spectrogram(path: Path) -> torch.Tensor:
    arr = ave_spectrogram_from_wav(path) if path.suffix == ".wav" else load_array(path)
    if arr.shape not in (AVE_SPEC, (1, *AVE_SPEC)):
        raise DataError(f"{path}: spectrogram has shape {arr.shape}, expected {AVE_SPEC}; "
                        "make it with the recipe in docs/datasets.md")
    return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)).reshape(1, *AVE_SPEC)


# ---- frames --------------------------------------------------------------------------------

def frame_positions(n: int, k: int) -> list[int]:
    """``k`` evenly spaced indices into ``n`` sorted frames (repeats when n < k)."""
    return [i * n // k for i in range(k)]


def read_frames(folder: Path, num_frames: int, size: tuple[int, int]) -> torch.Tensor:
    frames = image_files(folder)
    if not frames:
        raise DataError(f"{folder}: no frame images; extract frames as docs/datasets.md shows")
    return torch.cat([read_image(frames[i], size, 3)
                      for i in frame_positions(len(frames), num_frames)])


def read_av(record: Record, audio: Callable[[Path], torch.Tensor], num_frames: int,
            size: tuple[int, int], only: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    """``record.files`` = (audio file, frames folder); only the modalities in ``only``."""
    out = {}
    if only is None or "audio" in only:
        out["audio"] = audio(record.files[0])
    if only is None or "visual" in only:
        out["visual"] = read_frames(record.files[1], num_frames, size)
    return out


# ---- listing samples -----------------------------------------------------------------------

def find_av(clip: str, audio: Path | None, frames: Path, label: int, where: str,
            problems: Problems, root: Path) -> Record | None:
    """A record when both the audio file and a non-empty frames folder exist inside ``root``
    (``clip`` comes from an annotation file: it must be a plain name, and no file of the
    sample may lead outside the root through a symlink)."""
    if not plain_name(clip):
        problems.add(f"{where}: clip name {clip!r} is not a plain file name (no '/', '\\', "
                     "':' or '..'); it must name files inside the dataset root")
    elif audio is None or not audio.is_file():
        problems.add(f"{where}: clip {clip!r} has no audio file {audio}")
    elif not frames.is_dir() or not (images := image_files(frames)):
        problems.add(f"{where}: clip {clip!r} has no frames in {frames}")
    else:
        for path in (audio, frames, *images):
            inside(root, path, where)
        return Record((audio, frames), label)
    return None


def cremad_rows(csv_path: Path, root: Path, problems: Problems) -> list[Record]:
    if not csv_path.is_file():
        raise DataError(f"{csv_path} is missing; copy OGM-GE's data/CREMAD/{csv_path.name}")
    records = []
    with open(csv_path, encoding="utf-8-sig", newline="") as f:
        for line, row in enumerate(csv.reader(f), start=1):
            where = f"{csv_path}:{line}"
            if not row:
                continue
            if len(row) != 2 or row[1].strip() not in CREMAD_CLASSES:
                problems.add(f"{where}: expected '<clip>,<EMOTION>' with EMOTION in "
                             f"{list(CREMAD_CLASSES)} but got {','.join(row)!r}")
                continue
            clip, emotion = row[0].strip(), row[1].strip()
            r = find_av(clip, root / "AudioWAV" / f"{clip}.wav", root / "Image-01-FPS" / clip,
                        CREMAD_CLASSES.index(emotion), where, problems, root)
            if r is not None:
                records.append(r)
    return records


@dataclass(frozen=True)
class AveLine:
    category: str
    video: str
    where: str


def ave_lines(path: Path, problems: Problems | None) -> list[AveLine]:
    """Lines 'Category&VideoID&Quality&Start&End' (a 'VideoID' header line is skipped)."""
    if not path.is_file():
        raise DataError(f"{path} is missing; copy it from the AVE release")
    out = []
    text = path.read_text(encoding="utf-8-sig")
    for i, line in enumerate(text.splitlines(), start=1):
        parts = line.strip().split("&")
        if not line.strip() or parts[1:2] == ["VideoID"]:
            continue
        if len(parts) != 5 or not parts[0] or not parts[1]:
            msg = f"{path}:{i}: expected 'Category&VideoID&Quality&Start&End' but got {line!r}"
            if problems is None:
                raise DataError(msg)
            problems.add(msg)
            continue
        out.append(AveLine(parts[0], parts[1], f"{path}:{i}"))
    return out


def ave_classes(root: Path, split_files: Sequence[Path]) -> tuple[str, ...]:
    """Sorted categories of Annotations.txt (strict), else of the split files (their bad
    lines are reported when the splits are listed)."""
    if (root / "Annotations.txt").is_file():
        lines = ave_lines(root / "Annotations.txt", None)
    else:
        later = Problems("", "skip")
        lines = [a for p in split_files for a in ave_lines(p, later)]
    return tuple(sorted({a.category for a in lines}))


def ave_audio_file(folder: Path, video: str) -> Path | None:
    if not plain_name(video):
        return None
    for ext in (".npy", ".pkl", ".wav"):
        if (folder / f"{video}{ext}").is_file():
            return folder / f"{video}{ext}"
    return None


def ave_rows(path: Path, root: Path, classes: Sequence[str], audio_dir: str, frames_dir: str,
             problems: Problems) -> list[Record]:
    """Records of one AVE split file; a video listed twice with one category counts once."""
    records: dict[str, Record] = {}
    seen: dict[str, str] = {}
    for a in ave_lines(path, problems):
        if a.video in seen:
            if seen[a.video] != a.category:
                problems.add(f"{a.where}: video {a.video} is listed again with category "
                             f"{a.category!r} (first {seen[a.video]!r})")
                records.pop(a.video, None)
            continue
        seen[a.video] = a.category
        if a.category not in classes:
            problems.add(f"{a.where}: category {a.category!r} is not in Annotations.txt")
            continue
        r = find_av(a.video, ave_audio_file(root / audio_dir, a.video),
                    root / frames_dir / a.video, classes.index(a.category), a.where, problems,
                    root)
        if r is not None:
            records[a.video] = r
    return list(records.values())


# ---- bundles -------------------------------------------------------------------------------

def _check(num_frames: int, image_size: Sequence[int], on_error: str,
           validate: str) -> tuple[int, int]:
    if not isinstance(num_frames, int) or num_frames < 1:
        raise DataError(f"num_frames must be a positive int but got {num_frames!r}")
    check_choice("on_error", on_error, ("raise", "skip"))
    check_choice("validate", validate, ("all", "first"))
    return check_size("image_size", image_size)


def _modalities(spec_shape: tuple[int, int], num_frames: int,
                size: tuple[int, int]) -> tuple[ModalitySpec, ...]:
    return (ModalitySpec("audio", "image", (1, *spec_shape)),
            ModalitySpec("visual", "image", (3 * num_frames, *size)))


def _bundle(spec: DatasetSpec, listed: dict[str, tuple[list[Record], Problems]], read: Reader,
            validate: str, sources: Sequence[Path], cache: DatasetCache | None) -> DataBundle:
    splits, skipped = {}, 0
    for split, (records, problems) in listed.items():
        kept, n = usable(records, read, spec.modalities, problems, validate,
                         "check the layout in docs/datasets.md", cache, split)
        splits[split] = make_split(spec, split, kept, read, validate, cache)
        skipped += n
    return DataBundle(spec, splits, skipped=skipped,
                      sources=tuple(p for p in sources if p.is_file()))


def _frames_recipe(num_frames: int, size: tuple[int, int]) -> str:
    return (f"visual: {num_frames} frame(s) at k*n//{num_frames} of sorted 1-fps frames, "
            f"bilinear {size} (H, W), /255, ImageNet mean/std, stacked as channels")


@register_dataset("cremad")
def cremad(root: str | Path, num_frames: int = 1, image_size: Sequence[int] = (224, 224),
           val_fraction: float = 0.1, seed: int = 0, on_error: OnError = "raise",
           validate: str = "all", cache_dir: str | Path | None = None) -> DataBundle:
    """CREMA-D (6 emotions) in the OGM-GE layout; val = stratified part of train."""
    size = _check(num_frames, image_size, on_error, validate)
    check_fraction("val_fraction", val_fraction)
    root = Path(root)
    listed: dict[str, tuple[list[Record], Problems]] = {}
    for split in ("train", "test"):
        problems = Problems(f"cremad split {split!r}", on_error)
        listed[split] = (cremad_rows(root / f"{split}.csv", root, problems), problems)
    read = partial(read_av, audio=cremad_spectrogram, num_frames=num_frames, size=size)
    modalities = _modalities(CREMAD_SPEC, num_frames, size)
    cache = DatasetCache(cache_dir, "cremad", read, modalities) if cache_dir else None
    train, problems = listed["train"]
    if cache is not None:  # one store for train.csv, whatever val_fraction and seed carve
        cache.store("train", train)
    held = stratified_holdout([r.label for r in train], val_fraction, seed)
    listed["train"] = ([r for r, h in zip(train, held, strict=True) if not h], problems)
    listed["val"] = ([r for r, h in zip(train, held, strict=True) if h],
                     Problems("cremad split 'val'", on_error))
    spec = DatasetSpec(
        "cremad", "classification", modalities, 6,
        CREMAD_CLASSES, version=f"cremad/{VERSION}",
        recipe=("audio: AudioWAV 16-bit -> mono, FFT-resample 22.05 kHz, tile to 3 s, clip, "
                "STFT n_fft 512 hop 353 hann centre reflect, log(|.|+1e-7) -> 1x257x188; "
                f"{_frames_recipe(num_frames, size)}; val = stratified {val_fraction} of "
                f"train.csv (seed {seed})"))
    return _bundle(spec, listed, read, validate, [root / "train.csv", root / "test.csv"], cache)


@register_dataset("ave")
def ave(root: str | Path, num_frames: int = 3, image_size: Sequence[int] = (224, 224),
        audio_dir: str = "Audio-1004-SE", frames_dir: str = "Image-01-FPS-SE",
        on_error: OnError = "raise", validate: str = "all",
        cache_dir: str | Path | None = None) -> DataBundle:
    """AVE (28 events) with its own train/val/test lists, in the ReconBoost layout."""
    size = _check(num_frames, image_size, on_error, validate)
    root = Path(root)
    files = {"train": root / "trainSet.txt", "val": root / "valSet.txt",
             "test": root / "testSet.txt"}
    classes = ave_classes(root, list(files.values()))
    listed: dict[str, tuple[list[Record], Problems]] = {}
    for split, path in files.items():
        problems = Problems(f"ave split {split!r}", on_error)
        listed[split] = (ave_rows(path, root, classes, audio_dir, frames_dir, problems),
                         problems)
    spec = DatasetSpec(
        "ave", "classification", _modalities(AVE_SPEC, num_frames, size), len(classes),
        classes, version=f"ave/{VERSION}",
        recipe=(f"audio: {audio_dir}/<id>.npy|.pkl (OGM-GE obtain_audio_spectrogram) or .wav "
                "-> 22.05 kHz, tile/cut 160000, clip, PSD tukey(.25) 512/159, log(.+1e-7), "
                f"standardised -> 1x257x1004; {_frames_recipe(num_frames, size)} from "
                f"{frames_dir}; classes sorted"))
    read = partial(read_av, audio=ave_spectrogram, num_frames=num_frames, size=size)
    cache = DatasetCache(cache_dir, "ave", read, spec.modalities) if cache_dir else None
    return _bundle(spec, listed, read, validate, [*files.values(), root / "Annotations.txt"],
                   cache)
