"""Rebuild AV-Digits, the embedded audio-visual digit benchmark (in the spirit of AV-MNIST).

Usage::

    python -m trainers.data.build_avdigits --out trainers/data/assets/avdigits-v1.npz

Image modality: the 1,797 real 8x8 handwritten digits of ``sklearn.datasets.load_digits``,
degraded (per-sample contrast and brightness, blur, a random occluding patch, Gaussian noise)
so that the image alone is a *weak* modality. Audio modality: the same digit spoken by the
``espeak-ng`` engine with a randomly drawn voice (English accents saying the English word,
foreign voices reading the English word with their own spelling rules, or foreign voices saying
the numeral in their own language), voice variant, speed and pitch, mixed with white/pink/brown
noise at a random SNR and turned into a log-mel spectrogram; audio is the *dominant* modality.
The two degradations are drawn independently, so fusing both beats either alone.

The built file ships with the package; this script is only needed to rebuild it. The result is
deterministic given the recipe's seed and the espeak-ng version (recorded in the file).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
import wave
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

VERSION = "avdigits-v1"
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
MISSING_ESPEAK = ("espeak-ng not found: apt-get install espeak-ng (only needed to REBUILD the "
                  "dataset; the built file ships with the package)")
MISSING_SKLEARN = ("scikit-learn not found: pip install scikit-learn (only needed to REBUILD the "
                   "dataset; the built file ships with the package)")
SPLITS = ("train", "val", "test")


class ToolMissingError(RuntimeError):
    """A tool needed only for rebuilding the dataset is not installed."""


@dataclass(frozen=True)
class Recipe:
    """Every parameter of the build; stored as JSON in the npz so a result row can cite it."""

    seed: int = 20240601
    # speech: which voices say what (groups are drawn with the given probabilities)
    english_voices: tuple[str, ...] = (
        "en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-us-nyc",
        "en-gb-x-gbclan", "en-gb-x-gbcwmd")
    accented_voices: tuple[str, ...] = (
        "es", "it", "nl", "pl", "sw", "fi", "id", "cs", "hu", "ro")
    native_voices: tuple[str, ...] = ("de", "fr-fr", "es")
    group_probs: tuple[float, float, float] = (0.7, 0.3, 0.0)
    variants: tuple[str, ...] = (
        "", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5",
        "croak", "whisper", "klatt", "klatt2", "klatt3")
    speed_wpm: tuple[int, int] = (130, 230)
    pitch: tuple[int, int] = (15, 85)
    # audio signal chain
    sample_rate: int = 22050
    window_s: float = 1.0
    trim_threshold: float = 0.02
    span_margin: tuple[float, float] = (0.05, 0.3)
    # per-sample severity s in [0, 1]: "hard" with probability *_hard_prob, else "easy"
    easy_severity: tuple[float, float] = (0.0, 0.35)
    hard_severity: tuple[float, float] = (0.7, 1.0)
    audio_hard_prob: float = 0.35
    snr_db: tuple[float, float] = (20.0, -15.0)  # SNR at severity 0 and at severity 1
    noise_colours: tuple[str, ...] = ("white", "pink", "brown")
    n_fft: int = 512
    n_mels: int = 12
    n_frames: int = 12
    fmin_hz: float = 60.0
    fmax_hz: float = 8000.0
    dynamic_range_db: float = 80.0
    # image degradation (pixels scaled to [0, 1] first)
    image_hard_prob: float = 0.5
    contrast_min: float = 0.2
    brightness_max: float = 0.3
    occlude_max: int = 7
    noise_std_max: float = 0.05
    # splits (stratified by digit)
    split_fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)
    tools: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({"version": VERSION, **asdict(self)}, sort_keys=True)


@dataclass(frozen=True)
class Utterance:
    """One synthesis request: what espeak-ng says and how."""

    voice: str
    variant: str
    text: str
    speed: int
    pitch: int
    group: int


def require_espeak() -> str:
    """Path of espeak-ng, or a clear error saying it is only needed for a rebuild."""
    path = shutil.which("espeak-ng")
    if path is None:
        raise ToolMissingError(MISSING_ESPEAK)
    return path


def load_digit_images() -> tuple[np.ndarray, np.ndarray]:
    """The 1,797 real 8x8 digits (values 0..16) and their labels."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise ToolMissingError(MISSING_SKLEARN) from exc
    digits = load_digits()
    return digits.images.astype(np.float64), digits.target.astype(np.int64)


def tool_versions(espeak: str) -> dict[str, str]:
    """Versions that determine the bytes of the build (espeak-ng output can change)."""
    import sklearn

    out = subprocess.run([espeak, "--version"], capture_output=True, text=True, check=True)
    return {"espeak-ng": out.stdout.strip(), "numpy": np.__version__,
            "scikit-learn": sklearn.__version__}


def choose_utterance(rng: np.random.Generator, recipe: Recipe, digit: int) -> Utterance:
    """Draw voice group, voice, variant, speed and pitch for one sample."""
    group = int(rng.choice(3, p=np.asarray(recipe.group_probs)))
    voices = (recipe.english_voices, recipe.accented_voices, recipe.native_voices)[group]
    voice = str(rng.choice(voices))
    text = str(digit) if group == 2 else DIGIT_WORDS[digit]
    return Utterance(voice=voice, variant=str(rng.choice(recipe.variants)), text=text,
                     speed=int(rng.integers(recipe.speed_wpm[0], recipe.speed_wpm[1] + 1)),
                     pitch=int(rng.integers(recipe.pitch[0], recipe.pitch[1] + 1)), group=group)


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """Mono 16-bit wav -> float waveform in [-1, 1] and its sample rate (stdlib ``wave``)."""
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2 or w.getnchannels() != 1:
            raise ValueError(f"{path}: expected mono 16-bit PCM, got {w.getnchannels()} "
                             f"channels of {8 * w.getsampwidth()} bits")
        frames = w.readframes(w.getnframes())
        return np.frombuffer(frames, dtype="<i2").astype(np.float64) / 32768.0, w.getframerate()


def synthesize(espeak: str, utt: Utterance, workdir: Path) -> tuple[np.ndarray, int]:
    """Run espeak-ng once and read back its waveform."""
    voice = f"{utt.voice}+{utt.variant}" if utt.variant else utt.voice
    out = workdir / "utt.wav"
    cmd = [espeak, "-v", voice, "-s", str(utt.speed), "-p", str(utt.pitch), "-w", str(out),
           utt.text]
    subprocess.run(cmd, check=True, capture_output=True)
    return read_wav(out)


def place_in_window(x: np.ndarray, rng: np.random.Generator, n: int,
                    threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Trim silence, then put the word at a random offset in an n-sample window.

    Returns the window and a mask of where speech is (for the SNR reference power)."""
    active = np.nonzero(np.abs(x) > threshold * np.abs(x).max())[0]
    x = x[active[0]:active[-1] + 1]
    if len(x) > n:
        start = (len(x) - n) // 2
        x = x[start:start + n]
    offset = int(rng.integers(0, n - len(x) + 1))
    out, mask = np.zeros(n), np.zeros(n, dtype=bool)
    out[offset:offset + len(x)] = x
    mask[offset:offset + len(x)] = True
    return out, mask


def coloured_noise(rng: np.random.Generator, n: int, colour: str) -> np.ndarray:
    """Unit-power white, pink (1/f) or brown (1/f^2) noise, shaped in the frequency domain."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.maximum(np.arange(len(spec)), 1.0)
    spec *= {"white": 1.0, "pink": f ** -0.5, "brown": f ** -1.0}[colour]
    noise = np.fft.irfft(spec, n)
    return noise / np.sqrt(np.mean(noise ** 2))


def draw_severity(rng: np.random.Generator, hard_prob: float, recipe: Recipe) -> float:
    """Per-sample degradation strength from a two-component mixture.

    Each modality is either fairly clean or badly damaged for a given sample (drawn
    independently per modality), so the other modality can rescue it: that is what makes
    fusion worth more than the best single modality."""
    hard = rng.random() < hard_prob
    return float(rng.uniform(*(recipe.hard_severity if hard else recipe.easy_severity)))


def add_noise(x: np.ndarray, mask: np.ndarray, rng: np.random.Generator, severity: float,
              recipe: Recipe) -> tuple[np.ndarray, float]:
    """Mix in noise whose SNR (relative to the speech's own power) falls with severity."""
    snr = recipe.snr_db[0] + severity * (recipe.snr_db[1] - recipe.snr_db[0])
    colour = str(rng.choice(recipe.noise_colours))
    power = np.mean(x[mask] ** 2)
    noise = coloured_noise(rng, len(x), colour) * np.sqrt(power / 10 ** (snr / 10))
    return x + noise, snr


def mel_filterbank(recipe: Recipe) -> np.ndarray:
    """Triangular mel filters, shape (n_mels, n_fft // 2 + 1), Slaney-style area-normalised."""
    def hz_to_mel(f: np.ndarray) -> np.ndarray:
        return 2595.0 * np.log10(1.0 + f / 700.0)

    mels = np.linspace(hz_to_mel(np.array(recipe.fmin_hz)), hz_to_mel(np.array(recipe.fmax_hz)),
                       recipe.n_mels + 2)
    edges = 700.0 * (10 ** (mels / 2595.0) - 1.0)
    freqs = np.fft.rfftfreq(recipe.n_fft, 1.0 / recipe.sample_rate)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    tri = np.maximum(0.0, np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)))
    return tri * (2.0 / (hi - lo))


def frame_span(mask: np.ndarray, rng: np.random.Generator, recipe: Recipe) -> tuple[int, int]:
    """Sample range the spectrogram covers: the word plus a random margin on each side.

    Spreading the fixed number of frames over the word (rather than over the whole window)
    normalises its duration without resampling, so pitch is untouched and a small CNN with
    global pooling sees speech at most positions instead of mostly noise."""
    on = np.nonzero(mask)[0]
    length = on[-1] - on[0] + 1
    lo, hi = rng.uniform(*recipe.span_margin, size=2) * length
    start = max(0, int(on[0] - lo))
    stop = min(len(mask), int(on[-1] + hi))
    return start, max(stop, start + recipe.n_fft + recipe.n_frames)


def log_mel(x: np.ndarray, span: tuple[int, int], recipe: Recipe,
            fbank: np.ndarray) -> np.ndarray:
    """Log-mel spectrogram (n_mels, n_frames) in [0, 1] of ``x[span]``: dB relative to the
    sample's peak, clipped to ``dynamic_range_db`` (so loudness is normalised away)."""
    x = x[span[0]:span[1]]
    starts = np.round(np.linspace(0, len(x) - recipe.n_fft, recipe.n_frames)).astype(int)
    frames = x[starts[:, None] + np.arange(recipe.n_fft)] * np.hanning(recipe.n_fft)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    db = 10.0 * np.log10(fbank @ power.T + 1e-12)
    db = np.clip(db - db.max(), -recipe.dynamic_range_db, 0.0)
    return db / recipe.dynamic_range_db + 1.0


def blur3(img: np.ndarray) -> np.ndarray:
    """3x3 binomial blur with edge replication (a soft, camera-like defocus)."""
    k = np.array([0.25, 0.5, 0.25])
    p = np.pad(img, 1, mode="edge")
    rows = k[0] * p[:-2] + k[1] * p[1:-1] + k[2] * p[2:]
    return k[0] * rows[:, :-2] + k[1] * rows[:, 1:-1] + k[2] * rows[:, 2:]


def degrade_image(img: np.ndarray, rng: np.random.Generator, severity: float,
                  recipe: Recipe) -> np.ndarray:
    """Make the 8x8 digit the weak modality; every defect grows with severity.

    Blur (probability = severity), contrast 1 -> contrast_min, a random brightness offset,
    a flat occluder of random grey with side round(severity * occlude_max), then Gaussian
    noise of std severity * noise_std_max. The damage removes information rather than adding
    random texture, so a network cannot memorise the hopeless samples (an occluded digit
    looks like every other occluded digit); otherwise the weak modality would be memorised
    faster than the strong one is learned. Returns values in [0, 1]."""
    x = img / 16.0
    if rng.random() < severity:
        x = blur3(x)
    x = rng.uniform(0.0, recipe.brightness_max) + (1.0 - severity * (1.0 - recipe.contrast_min)) * x
    side = round(severity * recipe.occlude_max)
    if side > 0:
        r, c = rng.integers(0, 8 - side + 1, size=2)
        x[r:r + side, c:c + side] = rng.uniform(0.0, 1.0)
    x = x + rng.normal(0.0, severity * recipe.noise_std_max, size=x.shape)
    return np.clip(x, 0.0, 1.0)


def stratified_splits(labels: np.ndarray, fractions: tuple[float, float, float],
                      seed: int) -> dict[str, np.ndarray]:
    """Per-class shuffled train/val/test indices, so every split has the overall class mix."""
    rng = np.random.default_rng([seed, 1])
    parts: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    for c in np.unique(labels):
        idx = rng.permutation(np.nonzero(labels == c)[0])
        n_train = round(fractions[0] * len(idx))
        n_val = round(fractions[1] * len(idx))
        for s, chunk in zip(SPLITS, np.split(idx, [n_train, n_train + n_val]), strict=True):
            parts[s].append(chunk)
    return {s: np.sort(np.concatenate(p)).astype(np.int16) for s, p in parts.items()}


def build_audio(espeak: str, labels: np.ndarray, recipe: Recipe) -> dict[str, np.ndarray]:
    """Synthesise, degrade and featurise one utterance per image; per-sample RNG streams keep
    each sample independent of the others' draws."""
    n = round(recipe.window_s * recipe.sample_rate)
    fbank = mel_filterbank(recipe)
    specs, meta = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i, digit in enumerate(labels):
            rng = np.random.default_rng([recipe.seed, 2, i])
            utt = choose_utterance(rng, recipe, int(digit))
            wav, rate = synthesize(espeak, utt, Path(tmp))
            if rate != recipe.sample_rate:
                raise ValueError(f"espeak-ng produced {rate} Hz; recipe.sample_rate is "
                                 f"{recipe.sample_rate}: set it to {rate}")
            x, mask = place_in_window(wav, rng, n, recipe.trim_threshold)
            severity = draw_severity(rng, recipe.audio_hard_prob, recipe)
            x, snr = add_noise(x, mask, rng, severity, recipe)
            specs.append(log_mel(x, frame_span(mask, rng, recipe), recipe, fbank))
            meta.append((severity, snr, utt.group, f"{utt.voice}+{utt.variant}", utt.speed,
                         utt.pitch))
    severity, snr, group, voice, speed, pitch = zip(*meta, strict=True)
    return {
        "audio": np.round(np.stack(specs)[:, None] * 255).astype(np.uint8),
        "audio_severity": np.array(severity, dtype=np.float16),
        "audio_snr_db": np.array(snr, dtype=np.float16),
        "audio_group": np.array(group, dtype=np.uint8),
        "audio_voice": np.array(voice),
        "audio_speed": np.array(speed, dtype=np.uint8),
        "audio_pitch": np.array(pitch, dtype=np.uint8),
    }


def build_images(images: np.ndarray, recipe: Recipe) -> dict[str, np.ndarray]:
    """Degrade every digit with its own RNG stream and severity."""
    out, severities = [], []
    for i, im in enumerate(images):
        rng = np.random.default_rng([recipe.seed, 3, i])
        severity = draw_severity(rng, recipe.image_hard_prob, recipe)
        out.append(degrade_image(im, rng, severity, recipe))
        severities.append(severity)
    return {"image": np.round(np.stack(out)[:, None] * 255).astype(np.uint8),
            "image_severity": np.array(severities, dtype=np.float16)}


def build(recipe: Recipe) -> dict[str, np.ndarray]:
    """All arrays of the npz: uint8 modalities, labels, split indices, metadata, recipe."""
    espeak = require_espeak()
    images, labels = load_digit_images()
    recipe = Recipe(**{**asdict(recipe), "tools": tool_versions(espeak)})
    splits = stratified_splits(labels, recipe.split_fractions, recipe.seed)
    return {
        **build_audio(espeak, labels, recipe),
        **build_images(images, recipe),
        "label": labels.astype(np.uint8),
        **{f"{s}_idx": idx for s, idx in splits.items()},
        "class_names": np.array(DIGIT_WORDS),
        "recipe": np.array(recipe.to_json()),
        "version": np.array(VERSION),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="path of the .npz to write")
    parser.add_argument("--seed", type=int, default=Recipe.seed)
    args = parser.parse_args(argv)
    arrays = build(Recipe(seed=args.seed))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **arrays)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB, "
          f"{len(arrays['label'])} samples)")


if __name__ == "__main__":
    main()
