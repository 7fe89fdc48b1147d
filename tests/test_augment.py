"""Train-split augmentation recipes: each operation by hand, seeding, train-only, bad input."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from tests.conftest import tiny_cfg
from trainers.data import DataError, create_dataset
from trainers.data.augment import OPS, RECIPES, Erase, HFlip, PadCrop, ResizedCrop
from trainers.data.contract import iterate_batches
from trainers.loop import batches, fit
from trainers.strategies import create_strategy

RECIPE = ["hflip", {"op": "pad_crop", "pad": 2}, {"op": "erase", "p": 1.0}]


def synth(augment: object = RECIPE, **kw: object):
    return create_dataset("reid_synth", num_ids=8, val_ids=2, test_ids=2, images_per_id=4,
                          num_cameras=2, image_size=(16, 8), augment=augment, **kw)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def ramp(c: int = 1, h: int = 6, w: int = 4) -> torch.Tensor:
    return torch.arange(c * h * w, dtype=torch.float32).reshape(c, h, w) + 1


def test_hflip_mirrors_or_keeps() -> None:
    x = ramp()
    assert torch.equal(HFlip(p=1.0)(x, gen()), x[..., [3, 2, 1, 0]])
    assert torch.equal(HFlip(p=0.0)(x, gen()), x)


def test_pad_crop_is_a_shifted_window_of_the_zero_padded_image() -> None:
    x = ramp()
    assert torch.equal(PadCrop(pad=0)(x, gen()), x)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    windows = [padded[..., t:t + 6, s:s + 4] for t in range(5) for s in range(5)]
    outs = [PadCrop(pad=2)(x, gen(seed)) for seed in range(30)]
    assert all(any(torch.equal(o, w) for w in windows) for o in outs)
    assert len({tuple(o.flatten().tolist()) for o in outs}) > 3  # the offset is random


def test_erase_fills_one_rectangle_of_the_asked_area() -> None:
    x = ramp(h=20, w=10)
    for seed in range(20):
        out = Erase(p=1.0, area=(0.1, 0.2), value=0.0)(x, gen(seed))
        zero = out == 0
        rows, cols = zero.any(dim=2)[0].nonzero(), zero.any(dim=1)[0].nonzero()
        box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
        assert int(zero.sum()) == int(box)  # one filled rectangle, the rest untouched
        assert 0.1 * 200 * 0.6 <= int(box) <= 0.2 * 200 * 1.4  # area within rounding
        assert torch.equal(out[~zero], x[~zero])
    assert torch.equal(Erase(p=0.0)(x, gen()), x)


def test_resized_crop_full_window_is_the_identity() -> None:
    x = ramp(c=3, h=8, w=8)
    assert torch.allclose(ResizedCrop(scale=(1.0, 1.0), ratio=(1.0, 1.0))(x, gen()), x)
    out = ResizedCrop()(x, gen(3))
    assert out.shape == x.shape and not torch.equal(out, x)


def test_same_seed_same_batches_other_seed_other_batches() -> None:
    train = synth()["train"]
    first = next(batches(None, train, 8, epoch_seed=5, train=True))
    again = next(batches(None, train, 8, epoch_seed=5, train=True))
    other = next(batches(None, train, 8, epoch_seed=6, train=True))
    assert torch.equal(first["x"]["rgb"], again["x"]["rgb"])
    assert not torch.equal(first["x"]["rgb"], other["x"]["rgb"])


def test_train_batches_are_augmented_and_eval_never() -> None:
    data = synth()
    train = data["train"]
    batch = next(batches(None, train, 8, epoch_seed=0, train=True))
    raw = train.batch(batch["index"])["x"]
    for m in ("rgb", "nir", "tir"):  # erase p=1: every training sample changed
        changed = (batch["x"][m] != raw[m]).flatten(1).any(dim=1)
        assert changed.all()
    for split in ("val", "query", "gallery"):
        ds = data[split]
        assert ds.augment is None
        b = next(iterate_batches(ds, 8, augment_seed=0))
        assert torch.equal(b["x"]["rgb"], ds.batch(b["index"])["x"]["rgb"])
    b = next(batches(None, data["val"], 8, epoch_seed=0, train=False))
    assert torch.equal(b["x"]["rgb"], data["val"].batch(b["index"])["x"]["rgb"])


def test_recipe_only_touches_the_modalities_it_names() -> None:
    train = synth([{"op": "erase", "p": 1.0, "on": ["nir"]}])["train"]
    batch = next(batches(None, train, 8, epoch_seed=0, train=True))
    raw = train.batch(batch["index"])["x"]
    assert torch.equal(batch["x"]["rgb"], raw["rgb"])
    assert not torch.equal(batch["x"]["nir"], raw["nir"])


def test_defaults_none_and_recording_in_the_spec() -> None:
    assert synth("default")["train"].augment is None  # in-memory synthetic data: no recipe
    plain = synth("none")
    assert plain["train"].augment is None and "augment" not in plain.spec.recipe
    data = synth("hflip,erase")
    assert "train augment v1: hflip(p=0.5) on rgb/nir/tir; erase(" in data.spec.recipe
    assert all(ds.spec == data.spec for ds in data.splits.values())
    assert [d["op"] for d in RECIPES["rgbnt201"]] == ["hflip", "pad_crop", "erase"]
    assert all(d.get("on") == ["visual"] for d in RECIPES["cremad"])


def test_a_strategy_trains_on_augmented_batches() -> None:
    data = synth()
    s = create_strategy(data.spec, tiny_cfg("fusion_concat", epochs=1, batch_size=8))
    assert fit(s, data).epochs_run == 1


@pytest.mark.parametrize(("augment", "message"), [
    ("hflipp", "augment: unknown augmentation 'hflipp'; valid augmentations: erase, hflip"),
    ([{"op": "erase", "q": 1}], "augment: erase has no setting 'q'; its settings: p, area"),
    ([{"op": "hflip", "on": ["depth"]}], "augment: hflip on 'depth': not an image modality"),
    ([{"op": "hflip", "p": 2}], "augment: hflip p must be in [0, 1] but got 2"),
    ([{"op": "erase", "area": [0.5, float("nan")]}], "augment: erase area must be"),
    ([{"nope": 1}], "each operation is a name or a dict with 'op'"),
    ([{"op": "erase", "value": float("inf")}], "augment: erase value must be a finite number"),
    ([{"op": "resized_crop", "size": [0, 4]}], "augment: resized_crop size must be"),
    ([{"op": "pad_crop", "pad": -1}], "augment: pad_crop pad must be a non-negative int"),
    (3, "augment must be 'default', 'none'"),
])
def test_bad_recipes_are_one_line_errors(augment: object, message: str) -> None:
    with pytest.raises(DataError, match=message.replace("[", r"\[").replace("]", r"\]")) as e:
        synth(augment)
    assert "\n" not in str(e.value)


def test_an_augmentation_that_changes_the_shape_fails_at_construction() -> None:
    with pytest.raises(DataError, match=r"augmentation 'resized_crop' turned modality 'rgb' "
                                        r"of shape \(3, 16, 8\) into \(3, 4, 4\)"):
        synth([{"op": "resized_crop", "size": [4, 4]}])

    @OPS.register("test_shrink")
    @dataclass(frozen=True)
    class Shrink:
        def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
            return x[..., 1:]

    with pytest.raises(DataError, match="augmentation 'test_shrink' turned modality 'nir'"):
        synth([{"op": "test_shrink", "on": "nir"}])
