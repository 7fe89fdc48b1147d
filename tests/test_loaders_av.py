"""CREMA-D and AVE loaders on tiny fake trees in the OGM-GE / ReconBoost layouts."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.loader_trees import (
    AVE_CATEGORIES,
    CREMAD_EMOTIONS,
    ave_line,
    ave_tree,
    cremad_clip,
    cremad_tree,
    write_garbage,
    write_wav,
)
from trainers.data import DataError, create_dataset
from trainers.data.av_benchmarks import fill, frame_positions, psd_spectrogram, resample

SIZE = (8, 16)


def cremad(root: Path, **kw: object):
    return create_dataset("cremad", root=root, image_size=SIZE, val_fraction=0.34, **kw)


def ave(root: Path, **kw: object):
    return create_dataset("ave", root=root, image_size=SIZE, **kw)


def clips(ds) -> list[str]:
    return [r.files[0].stem for r in ds.loader.records]


# ---- CREMA-D ------------------------------------------------------------------------------

def test_cremad_labels_shapes_and_stratified_val(tmp_path: Path) -> None:
    b = cremad(cremad_tree(tmp_path), num_frames=2)
    assert b.spec.class_names == CREMAD_EMOTIONS and b.spec.task == "classification"
    assert b.spec.modality("audio").shape == (1, 257, 188)
    assert b.spec.modality("visual").shape == (6, *SIZE)  # 2 frames x RGB
    assert {s: len(b[s]) for s in ("train", "val", "test")} == {"train": 12, "val": 6, "test": 6}
    assert sorted(b["val"].labels.tolist()) == list(range(6))  # one per class
    for split in ("train", "val", "test"):
        ds = b[split]
        assert [CREMAD_EMOTIONS[y] for y in ds.labels.tolist()] == \
            [c.split("_")[2] for c in clips(ds)]
    assert set(clips(b["val"])).isdisjoint(clips(b["train"]))
    assert all(c.startswith("1004_") for c in clips(b["test"]))
    assert b.spec.version == "cremad/1" and "n_fft 512 hop 353" in b.spec.recipe


def test_cremad_audio_is_the_ogm_ge_spectrogram(tmp_path: Path) -> None:
    root = cremad_tree(tmp_path)
    x = cremad(root)["test"][0]["x"]
    assert x["visual"].shape == (3, *SIZE)
    spec = x["audio"][0]
    freq = 200 + 10 * (1004 % 7)  # the tree's sine for actor 1004
    assert spec.mean(dim=1).argmax().item() == round(freq * 512 / 22050)
    assert spec.min().item() >= np.log(1e-7) - 1e-3


def test_cremad_val_is_seeded(tmp_path: Path) -> None:
    root = cremad_tree(tmp_path)
    assert clips(cremad(root, seed=1)["val"]) == clips(cremad(root, seed=1)["val"])
    assert len({tuple(clips(cremad(root, seed=s)["val"])) for s in range(4)}) > 1


def test_cremad_bad_rows_and_missing_files(tmp_path: Path) -> None:
    root = cremad_tree(tmp_path)
    with open(root / "train.csv", "a") as f:
        f.write("1001_IEO_XXX_XX,XXX\n")
    (root / "AudioWAV" / f"{cremad_clip(1002, 'SAD')}.wav").unlink()
    frames = root / "Image-01-FPS" / cremad_clip(1003, "ANG")
    for p in frames.iterdir():
        p.unlink()
    with pytest.raises(DataError) as err:
        cremad(root)
    msg = str(err.value)
    assert "train.csv:19: expected '<clip>,<EMOTION>'" in msg and "'1001_IEO_XXX_XX,XXX'" in msg
    assert "clip '1002_IEO_SAD_XX' has no audio file" in msg
    assert f"clip '1003_IEO_ANG_XX' has no frames in {frames}" in msg
    with pytest.warns(UserWarning, match="3 bad sample"):
        b = cremad(root, on_error="skip")
    assert b.skipped == 3 and len(b["train"]) + len(b["val"]) == 16


def test_cremad_corrupt_and_wrong_format_wavs(tmp_path: Path) -> None:
    root = cremad_tree(tmp_path)
    bad = write_garbage(root / "AudioWAV" / f"{cremad_clip(1004, 'HAP')}.wav")
    with pytest.raises(DataError, match=rf"{bad.name}: cannot read WAV"):
        cremad(root)
    write_wav(bad, width=4)
    with pytest.raises(DataError, match=rf"{bad.name}: 32-bit WAV, expected 16-bit PCM"):
        cremad(root)
    with pytest.warns(UserWarning):
        b = cremad(root, on_error="skip")
    assert b.skipped == 1 and len(b["test"]) == 5


def test_cremad_missing_csv_and_empty_split(tmp_path: Path) -> None:
    root = cremad_tree(tmp_path)
    (root / "test.csv").write_text("")
    with pytest.raises(DataError, match="split 'test': no usable samples"):
        cremad(root)
    (root / "test.csv").unlink()
    with pytest.raises(DataError, match=r"test.csv is missing; copy OGM-GE's"):
        cremad(root)


# ---- AVE ----------------------------------------------------------------------------------

def test_ave_classes_labels_and_npy_spectrograms(tmp_path: Path) -> None:
    root = ave_tree(tmp_path)
    b = ave(root)
    assert b.spec.class_names == tuple(sorted(AVE_CATEGORIES)) and b.spec.num_classes == 3
    assert b.spec.modality("audio").shape == (1, 257, 1004)
    assert b.spec.modality("visual").shape == (9, *SIZE)  # 3 frames x RGB
    assert {s: len(b[s]) for s in ("train", "val", "test")} == {"train": 6, "val": 6, "test": 6}
    for s, split in enumerate(("train", "val", "test")):
        ds = b[split]
        assert all(c.startswith(f"v{s}") for c in clips(ds))
        cats = [AVE_CATEGORIES[int(c[2])] for c in clips(ds)]
        assert [b.spec.class_names[y] for y in ds.labels.tolist()] == cats
    item = b["val"][2]
    saved = np.load(b["val"].loader.records[2].files[0])
    assert torch.equal(item["x"]["audio"][0], torch.from_numpy(saved))


def test_ave_frames_are_evenly_spaced(tmp_path: Path) -> None:
    assert frame_positions(10, 3) == [0, 3, 6] and frame_positions(2, 3) == [0, 0, 1]
    x = ave(ave_tree(tmp_path, per_split=1))["test"][0]["x"]["visual"]
    levels = [x[3 * k].mean().item() * 0.229 + 0.485 for k in range(3)]  # undo normalisation
    assert levels == pytest.approx([20 / 255, 80 / 255, 140 / 255], abs=0.02)  # frames 1, 4, 7


def test_ave_spectrogram_from_wav_and_pickle(tmp_path: Path) -> None:
    root = ave_tree(tmp_path, per_split=1, spectrogram=".wav")
    a = ave(root)["train"][0]["x"]["audio"]
    assert a.shape == (1, 257, 1004)
    assert a.mean().item() == pytest.approx(0, abs=1e-4)
    assert a.std().item() == pytest.approx(1, rel=1e-3)
    video = ave(root)["train"].loader.records[0].files[0].stem
    (root / "Audio-1004-SE" / f"{video}.wav").unlink()
    arr = np.full((257, 1004), 2.0)
    (root / "Audio-1004-SE" / f"{video}.pkl").write_bytes(pickle.dumps(arr))
    assert (ave(root)["train"][0]["x"]["audio"] == 2.0).all()


class _Evil:
    def __reduce__(self):  # noqa: ANN204 - what a malicious pickle does
        return (print, ("pwned",))


def test_ave_pickle_only_unpickles_numpy(tmp_path: Path) -> None:
    root = ave_tree(tmp_path, per_split=1)
    video = ave(root)["test"].loader.records[0].files[0].stem
    (root / "Audio-1004-SE" / f"{video}.npy").unlink()
    (root / "Audio-1004-SE" / f"{video}.pkl").write_bytes(pickle.dumps(_Evil()))
    with pytest.raises(DataError, match=rf"{video}.pkl: cannot read array .*refusing"):
        ave(root)


def test_psd_spectrogram_matches_scipy() -> None:
    signal = pytest.importorskip("scipy.signal")
    rng = np.random.default_rng(0)
    x = fill(rng.uniform(-1, 1, 20000).astype(np.float32), 160000, 10)
    _, _, ref = signal.spectrogram(x, 22050, nperseg=512, noverlap=353)
    ours = psd_spectrogram(x, 22050)
    assert ours.shape == ref.shape == (257, 1004)
    assert np.allclose(np.log(ours + 1e-7), np.log(ref + 1e-7), atol=1e-4)
    y = np.sin(np.arange(16000) / 16000 * 2 * np.pi * 440).astype(np.float32)
    assert np.allclose(resample(y, 16000, 22050), signal.resample(y, 22050), atol=1e-4)


def test_ave_bad_lines_conflicts_and_missing_files(tmp_path: Path) -> None:
    root = ave_tree(tmp_path, per_split=1)
    with open(root / "trainSet.txt", "a") as f:
        f.write("Dog&broken\n")
        f.write(ave_line("Violin, fiddle", "v000xYz") + "\n")  # listed as Church bell before
    frames = root / "Image-01-FPS-SE" / "v210xYz"
    for p in frames.iterdir():
        p.unlink()
    with pytest.raises(DataError) as err:
        ave(root)
    msg = str(err.value)
    assert "trainSet.txt:4: expected 'Category&VideoID&Quality&Start&End'" in msg
    assert "trainSet.txt:5: video v000xYz is listed again with category 'Violin, fiddle'" in msg
    with pytest.warns(UserWarning):
        b = ave(root, on_error="skip")
    assert b.skipped == 3 and len(b["train"]) == 2 and len(b["test"]) == 2
    lines = (root / "trainSet.txt").read_text().splitlines()[:3]
    (root / "trainSet.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=rf"(?s)'test'.*'v210xYz' has no frames in {frames}"):
        ave(root)


def test_ave_without_annotations_uses_split_files(tmp_path: Path) -> None:
    root = ave_tree(tmp_path, per_split=1)
    (root / "Annotations.txt").unlink()
    assert ave(root).spec.class_names == tuple(sorted(AVE_CATEGORIES))
    (root / "valSet.txt").unlink()
    with pytest.raises(DataError, match="valSet.txt is missing"):
        ave(root)


def test_av_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="num_frames must be a positive int"):
        create_dataset("ave", root=tmp_path, num_frames=0)
    with pytest.raises(DataError, match="validate must be one of"):
        create_dataset("cremad", root=tmp_path, validate="some")
