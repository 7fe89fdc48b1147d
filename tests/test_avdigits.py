"""AV-Digits, the embedded default: real digits, fixed stratified splits, train-only
standardisation, the calibration the benchmark promises (audio strong, image weak, both better),
and clear errors for a bad file or a missing rebuild tool."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression

from trainers.data import DataError, create_dataset
from trainers.data import avdigits as av
from trainers.data import build_avdigits as build


@pytest.fixture(scope="module")
def arrays() -> dict[str, np.ndarray]:
    return av.read_npz()


@pytest.fixture(scope="module")
def bundle():
    return create_dataset("avdigits")


def test_spec_and_split_sizes(bundle):
    spec = bundle.spec
    assert spec.name == "avdigits" and spec.task == "classification"
    assert [(m.name, m.shape) for m in spec.modalities] == [("audio", (1, 12, 12)),
                                                            ("image", (1, 8, 8))]
    assert spec.num_classes == 10 and spec.class_names[3] == "three"
    assert spec.version == "avdigits-v1" and json.loads(spec.recipe)["seed"] == 20240601
    assert {s: len(bundle[s]) for s in ("train", "val", "test")} == {
        "train": 1078, "val": 359, "test": 360}


def test_splits_are_disjoint_complete_and_stratified(arrays):
    idx = {s: arrays[f"{s}_idx"].astype(int) for s in ("train", "val", "test")}
    together = np.concatenate(list(idx.values()))
    assert len(together) == len(set(together)) == 1797
    labels = arrays["label"].astype(int)
    overall = np.bincount(labels, minlength=10) / len(labels)
    for s, i in idx.items():
        share = np.bincount(labels[i], minlength=10) / len(i)
        assert np.abs(share - overall).max() < 0.01, s  # every split has the overall class mix


def test_images_are_the_real_sklearn_digits(arrays):
    """Lightly degraded samples still correlate strongly with the clean scikit-learn digit."""
    clean = load_digits().images.reshape(1797, -1)
    stored = arrays["image"].reshape(1797, -1).astype(float)
    assert (arrays["label"] == load_digits().target).all()
    easy = np.nonzero(arrays["image_severity"].astype(float) < 0.1)[0]
    assert len(easy) > 100
    corr = [np.corrcoef(clean[i], stored[i])[0, 1] for i in easy]
    assert np.median(corr) > 0.9


def test_standardised_with_train_statistics_only(bundle, arrays):
    raw = create_dataset("avdigits", normalize=False)
    for m in ("audio", "image"):
        train = bundle["train"].tensors[m]
        assert abs(train.mean().item()) < 1e-4 and abs(train.std().item() - 1) < 1e-3
        # the same affine map applies to val: computed from train, not from val itself
        r_train, r_val = raw["train"].tensors[m], raw["val"].tensors[m]
        expected = (r_val - r_train.mean()) / r_train.std()
        assert torch.allclose(bundle["val"].tensors[m], expected, atol=1e-5)
        assert abs(bundle["val"].tensors[m].mean().item()) > 1e-4
        stored = torch.from_numpy(arrays[m][arrays["train_idx"].astype(int)].astype(np.float32))
        assert torch.equal(r_train, stored / 255.0)


def _probe(x_train, y_train, x_test, y_test) -> float:
    clf = LogisticRegression(max_iter=200, C=0.1).fit(x_train, y_train)
    return float(clf.score(x_test, y_test))


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_calibration_audio_dominant_image_weak_fusion_best(bundle):
    """Linear classifiers on the raw features: neither modality is near perfect, audio beats
    image by a clear margin, and both together beat audio (the benchmark's purpose). Measured:
    audio 0.83, image 0.59, both 0.87 (test accuracy)."""
    def feats(split, mods):
        return torch.cat([bundle[split].tensors[m].flatten(1) for m in mods], 1).numpy()

    y_tr, y_te = bundle["train"].labels.numpy(), bundle["test"].labels.numpy()
    acc = {name: _probe(feats("train", mods), y_tr, feats("test", mods), y_te)
           for name, mods in {"audio": ["audio"], "image": ["image"],
                              "both": ["audio", "image"]}.items()}
    assert 0.5 < acc["audio"] < 0.95 and 0.3 < acc["image"] < 0.85, acc
    assert acc["audio"] > acc["image"] + 0.05, acc
    assert acc["both"] > acc["audio"] + 0.03, acc


def test_missing_file_and_missing_array_are_clear(tmp_path, arrays):
    with pytest.raises(DataError, match=r"avdigits: file '.*nope.npz' does not exist; rebuild "
                                        r"it with: python -m trainers.data.build_avdigits"):
        create_dataset("avdigits", path=tmp_path / "nope.npz")
    broken = tmp_path / "broken.npz"
    np.savez(broken, **{k: v for k, v in arrays.items() if k != "val_idx"})
    with pytest.raises(DataError, match=r"broken.npz lacks array 'val_idx'"):
        create_dataset("avdigits", path=broken)


def test_a_rebuilt_file_is_read_from_its_path(tmp_path, arrays):
    copy = tmp_path / "copy.npz"
    np.savez_compressed(copy, **arrays)
    assert av.recipe(copy)["version"] == "avdigits-v1"
    meta = av.metadata(copy)
    assert {"audio_snr_db", "image_severity", "label", "test_idx"} <= set(meta)


def test_rebuild_without_espeak_says_it_is_only_for_rebuilding(monkeypatch, tmp_path):
    monkeypatch.setattr(build.shutil, "which", lambda name: None)
    with pytest.raises(build.ToolMissingError, match="apt-get install espeak-ng .*only needed "
                                                     "to REBUILD"):
        build.main(["--out", str(tmp_path / "x.npz")])
    assert not (tmp_path / "x.npz").exists()


def test_build_pieces_behave():
    recipe = build.Recipe()
    labels = np.repeat(np.arange(10), 10)
    splits = build.stratified_splits(labels, (0.6, 0.2, 0.2), seed=1)
    assert [len(splits[s]) for s in build.SPLITS] == [60, 20, 20]
    assert all(np.bincount(labels[splits[s]], minlength=10).min() >= 2 for s in build.SPLITS)
    rng = np.random.default_rng(0)
    noise = build.coloured_noise(rng, 4096, "pink")
    assert abs(np.mean(noise ** 2) - 1) < 1e-9  # unit power
    fb = build.mel_filterbank(recipe)
    assert fb.shape == (recipe.n_mels, recipe.n_fft // 2 + 1) and (fb >= 0).all()
    img = np.full((8, 8), 16.0)
    assert (build.degrade_image(img, rng, 0.0, recipe) == 1.0).all()  # clean, white: clipped
    worst = build.degrade_image(img, np.random.default_rng(1), 1.0, recipe)
    assert 0.0 <= worst.min() and worst.max() <= 1.0
