"""Loaders for the multi-modal re-identification benchmarks of the UniCat paper.

Registered names and the folder ``root`` must point at (file names are parsed the way the
TOP-ReID / MambaPro loaders parse them, so the same release files load unchanged):

``rgbnt100`` / ``rgbn300`` (vehicles), ``root`` holds ``rgbir/``::

    rgbir/{bounding_box_train,query,bounding_box_test}/<pid>_c<cam>_<anything>.jpg

  One image per sample with the modalities side by side in equal-width tiles (256 x 128 px
  each in the release): RGB | NIR | TIR for RGBNT100, RGB | NIR for RGBN300. Cameras 1..8.

``rgbnt201`` (persons), ``root`` holds ``train_171/`` and ``test/``::

    {train_171,test}/{RGB,NI,TI}/<name>.jpg

  The same file name in each modality folder; person id = ``int(name[:6])``; camera from the
  ``camN`` token (e.g. ``000001_cam1_0_00.jpg``). Query = gallery = the whole test split.

``msvr310`` (vehicles), ``root`` holds the three split folders::

    {bounding_box_train,query3,bounding_box_test}/<vid>/{vis,ni,th}/<img>

  Parsed by character position: vehicle id = ``img[0:4]``, scene = ``img[6:9]``, camera =
  ``img[11]`` (e.g. ``0001_s001_v1_0001.jpg``). Scene ids go to ``sceneids`` (the evaluation
  excludes same-identity same-scene gallery items).

Every loader returns splits ``train`` / ``val`` / ``query`` / ``gallery``. ``val`` holds the
samples of a seeded ``val_fraction`` of the train identities (the benchmarks have no
validation split; SPEC section 8 selects on val, never on test). Train labels are remapped
to 0..C-1 in sorted order of the raw ids; val/query/gallery keep the raw ids. Camera ids are
0-based: ``c<cam>`` and ``camN`` minus one (as the reference loaders do), MSVR310's digit as is.

Images are decoded with PIL, cut into tiles where needed, resized (bilinear) to
``image_size`` = (height, width), scaled to [0, 1] and normalised: RGB with the ImageNet
mean/std, NIR/TIR converted to one grey channel (``ir_channels=1``, default) normalised with
mean 0.449 / std 0.226, or kept as three channels with the ImageNet statistics
(``ir_channels=3``, for 3-channel pretrained stems). Default sizes: 256 x 128 for persons,
128 x 256 for vehicles (their tiles' aspect, MambaPro's RGBNT100 setting; TOP-ReID resizes
everything to 256 x 128). Train augmentation is the dataset's recipe in
``trainers.data.augment``; ``cache_dir`` caches the decoded samples (``trainers.data.cache``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import torch

from trainers.data import register_dataset
from trainers.data.cache import DatasetCache
from trainers.data.contract import DataBundle, DataError, DatasetSpec, ModalitySpec
from trainers.data.images import decode_image, image_bytes, image_tensor, read_image
from trainers.data.loading import (
    OnError,
    Problems,
    Reader,
    Record,
    Within,
    carve_ids,
    check_choice,
    check_fraction,
    check_size,
    image_files,
    listdir_visible,
    make_split,
    relabel,
    require_dir,
    usable,
)

VERSION = "1"
_TILED = re.compile(r"(\d+)_c(\d+)")
_CAM = re.compile(r"(?:^|_)cam(\d+)(?=[_.]|$)")
Parse = Callable[[str], tuple[int, int, int]]  # file name -> (pid, camid, sceneid)


def _modalities(names: Sequence[str], size: tuple[int, int],
                ir_channels: int) -> tuple[ModalitySpec, ...]:
    return tuple(ModalitySpec(n, "image", (3 if n == "rgb" else ir_channels, *size))
                 for n in names)


# ---- file-name parsing (raise ValueError with the reason; callers add the path) ----------

def parse_tiled(name: str) -> tuple[int, int, int]:
    """``<pid>_c<cam>_*.jpg`` (RGBNT100 / RGBN300); cameras 1..8 -> camid 0..7."""
    m = _TILED.match(name)
    if not m:
        raise ValueError("name does not start with '<pid>_c<camera>', e.g. 0001_c3_x.jpg")
    pid, cam = int(m.group(1)), int(m.group(2))
    if not 1 <= cam <= 8:
        raise ValueError(f"camera {cam} is outside 1..8")
    return pid, cam - 1, -1


def parse_rgbnt201(name: str) -> tuple[int, int, int]:
    """Person id = first 6 characters; camera from the ``camN`` token -> camid N-1."""
    if not name[:6].isdigit():
        raise ValueError("the first 6 characters are not the person id, e.g. 000001_cam1_0.jpg")
    m = _CAM.search(name)
    if not m or int(m.group(1)) < 1:
        raise ValueError("no 'camN' token (N >= 1) for the camera, e.g. 000001_cam1_0.jpg")
    return int(name[:6]), int(m.group(1)) - 1, -1


def parse_msvr310(name: str) -> tuple[int, int, int]:
    """Vehicle id = name[0:4], scene = name[6:9], camera = name[11] (by position)."""
    vid, scene, cam = name[0:4], name[6:9], name[11:12]
    if not (vid.isdigit() and len(vid) == 4 and scene.isdigit() and len(scene) == 3
            and cam.isdigit()):
        raise ValueError("expected id at [0:4], scene at [6:9], camera at [11], "
                         "e.g. 0001_s001_v1_0001.jpg")
    return int(vid), int(cam), int(scene)


def _record(files: tuple[Path, ...], parse: Parse, problems: Problems) -> Record | None:
    try:
        pid, camid, sceneid = parse(files[0].name)
    except ValueError as e:
        problems.add(f"{files[0]}: cannot parse the file name: {e}")
        return None
    return Record(files, pid, camid, sceneid)


# ---- listing the files of one split -------------------------------------------------------

def scan_tiled(folder: Path, problems: Problems) -> list[Record]:
    """One record per image file of a tiled split folder."""
    require_dir(folder, "expected rgbir/{bounding_box_train,query,bounding_box_test} under root")
    records = [_record((p,), parse_tiled, problems) for p in image_files(folder)]
    return [r for r in records if r is not None]


def scan_parallel(folder: Path, subdirs: Sequence[str], parse: Parse,
                  problems: Problems) -> list[Record]:
    """One record per file name present in every modality folder ``folder/<subdir>/``."""
    dirs = [require_dir(folder / d, f"each of {list(subdirs)} must exist under {folder}")
            for d in subdirs]
    names = [{p.name for p in image_files(d)} for d in dirs]
    records = []
    for name in sorted(set().union(*names)):
        missing = [str(d / name) for d, have in zip(dirs, names, strict=True) if name not in have]
        if missing:
            present = next(d / name for d, have in zip(dirs, names, strict=True) if name in have)
            problems.add(f"{present}: no counterpart in the other modality folder(s): "
                         f"{', '.join(missing)} is missing")
            continue
        r = _record(tuple(d / name for d in dirs), parse, problems)
        if r is not None:
            records.append(r)
    return records


def scan_msvr310(folder: Path, problems: Problems) -> list[Record]:
    require_dir(folder, "expected {bounding_box_train,query3,bounding_box_test} under root")
    records = []
    for vdir in listdir_visible(folder):
        if not vdir.is_dir():
            problems.add(f"{vdir}: not a vehicle folder <vid>/{{vis,ni,th}}")
            continue
        records += scan_parallel(vdir, ("vis", "ni", "th"), parse_msvr310, problems)
    return records


# ---- reading one sample --------------------------------------------------------------------

def read_tiled(record: Record, names: Sequence[str], size: tuple[int, int],
               ir_channels: int, only: Sequence[str] | None = None,
               raw: bool = False) -> dict[str, torch.Tensor]:
    """Cut one image into ``len(names)`` equal-width tiles, left to right (those in ``only``;
    ``raw``: uint8, normalised later per batch)."""
    path = record.files[0]
    im = decode_image(path)
    w, h = im.size
    if w % len(names):
        raise DataError(f"{path}: width {w} px does not split into {len(names)} equal tiles "
                        f"({' | '.join(names)}); expected modalities side by side")
    tw = w // len(names)
    tile = image_bytes if raw else image_tensor
    return {n: tile(im.crop((k * tw, 0, (k + 1) * tw, h)), size, 3 if n == "rgb" else ir_channels)
            for k, n in enumerate(names) if only is None or n in only}


def read_parallel(record: Record, names: Sequence[str], size: tuple[int, int],
                  ir_channels: int, only: Sequence[str] | None = None,
                  raw: bool = False) -> dict[str, torch.Tensor]:
    """One file per modality; files of modalities not in ``only`` are not opened."""
    return {n: read_image(p, size, 3 if n == "rgb" else ir_channels, raw)
            for n, p in zip(names, record.files, strict=True) if only is None or n in only}


# ---- assembling the bundle -----------------------------------------------------------------

@dataclass(frozen=True)
class Options:
    """The checked keyword arguments every reid loader takes."""

    size: tuple[int, int]
    ir_channels: int
    val_fraction: float
    seed: int
    on_error: OnError
    validate: str
    cache_dir: str | Path | None = None


def options(image_size: Sequence[int], val_fraction: float, seed: int, ir_channels: int,
            on_error: str, validate: str, cache_dir: str | Path | None = None) -> Options:
    check_choice("ir_channels", ir_channels, (1, 3))
    check_choice("on_error", on_error, ("raise", "skip"))
    check_choice("validate", validate, ("all", "first"))
    return Options(check_size("image_size", image_size), ir_channels,
                   check_fraction("val_fraction", val_fraction), int(seed), on_error, validate,
                   cache_dir)


def recipe(layout: str, opt: Options) -> str:
    """What a result row records about how the samples were made."""
    return (f"{layout}; PIL decode, bilinear resize to {opt.size} (H, W), /255, rgb ImageNet "
            f"mean/std, nir/tir {opt.ir_channels} channel(s) (1 ch: mean 0.449 std 0.226; "
            f"3 ch: ImageNet); camids 0-based; val = {opt.val_fraction} of train ids (seed "
            f"{opt.seed}); train ids relabelled 0..C-1 in sorted order")


def carve_val(train: list[Record], opt: Options, name: str) -> tuple[list[Record], list[Record]]:
    """Split train records by identity into (train relabelled 0..C-1, val with raw ids)."""
    val_ids = carve_ids((r.label for r in train), opt.val_fraction, opt.seed,
                        f"{name} split 'train'")
    keep = [r for r in train if r.label not in val_ids]
    to_label = relabel(r.label for r in keep)
    return ([replace(r, label=to_label[r.label]) for r in keep],
            [r for r in train if r.label in val_ids])


Scan = Callable[[Problems], list[Record]]


def build_reid(name: str, names: Sequence[str], scans: Mapping[str, Scan], read: Reader,
               opt: Options, layout: str, root: str | Path) -> DataBundle:
    """Scan and screen 'train', 'query' and 'gallery' (absent: gallery = query), carve val.
    Every listed file must resolve to a place inside ``root`` (no symlink out of it)."""
    modalities = _modalities(names, opt.size, opt.ir_channels)
    raw = partial(read, raw=True)  # uint8 images: the pipeline and the cache normalise later
    cache = DatasetCache(opt.cache_dir, name, read, modalities, raw) if opt.cache_dir else None
    kept, skipped, within = {}, 0, Within(Path(root))
    for split, scan in scans.items():
        problems = Problems(f"{name} split {split!r}", opt.on_error)
        listed = scan(problems)
        for f in (f for r in listed for f in r.files):
            within(f, problems.where)
        kept[split], n = usable(listed, read, modalities, problems, opt.validate,
                                "check the folder layout in docs/datasets.md", cache, split)
        skipped += n
    train, val = carve_val(kept["train"], opt, name)
    spec = DatasetSpec(name, "reid", modalities, num_classes=len({r.label for r in train}),
                       recipe=recipe(layout, opt), version=f"{name}/{VERSION}")
    records = {"train": train, "val": val, "query": kept["query"],
               "gallery": kept.get("gallery", kept["query"])}
    splits = {}
    for split, rs in records.items():
        # gallery = query needs no second full read: the query split has been validated
        check = "first" if split == "gallery" and "gallery" not in kept else opt.validate
        splits[split] = make_split(spec, split, rs, read, check, cache, raw)
    return DataBundle(spec, splits, skipped=skipped)


def _tiled_bundle(name: str, names: tuple[str, ...], root: str | Path,
                  opt: Options) -> DataBundle:
    base = require_dir(Path(root) / "rgbir", f"the {name} root must hold rgbir/")
    folders = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}
    scans = {s: partial(scan_tiled, base / f) for s, f in folders.items()}
    return build_reid(name, names, scans,
                      partial(read_tiled, names=names, size=opt.size,
                              ir_channels=opt.ir_channels),
                      opt, f"rgbir/<split>/<pid>_c<cam>_*.jpg, tiles {' | '.join(names)}", root)


@register_dataset("rgbnt100")
def rgbnt100(root: str | Path, image_size: Sequence[int] = (128, 256),
             val_fraction: float = 0.1, seed: int = 0, ir_channels: int = 1,
             on_error: OnError = "raise", validate: str = "all",
             cache_dir: str | Path | None = None) -> DataBundle:
    """RGBNT100 vehicles: RGB | NIR | TIR tiles in one image (see the module docstring)."""
    opt = options(image_size, val_fraction, seed, ir_channels, on_error, validate, cache_dir)
    return _tiled_bundle("rgbnt100", ("rgb", "nir", "tir"), root, opt)


@register_dataset("rgbn300")
def rgbn300(root: str | Path, image_size: Sequence[int] = (128, 256),
            val_fraction: float = 0.1, seed: int = 0, ir_channels: int = 1,
            on_error: OnError = "raise", validate: str = "all",
            cache_dir: str | Path | None = None) -> DataBundle:
    """RGBN300 vehicles: RGB | NIR tiles in one image (see the module docstring)."""
    opt = options(image_size, val_fraction, seed, ir_channels, on_error, validate, cache_dir)
    return _tiled_bundle("rgbn300", ("rgb", "nir"), root, opt)


@register_dataset("rgbnt201")
def rgbnt201(root: str | Path, image_size: Sequence[int] = (256, 128),
             val_fraction: float = 0.1, seed: int = 0, ir_channels: int = 1,
             on_error: OnError = "raise", validate: str = "all",
             cache_dir: str | Path | None = None) -> DataBundle:
    """RGBNT201 persons: {train_171,test}/{RGB,NI,TI}/<name>.jpg; query = gallery = test."""
    opt = options(image_size, val_fraction, seed, ir_channels, on_error, validate, cache_dir)
    names, subdirs = ("rgb", "nir", "tir"), ("RGB", "NI", "TI")
    scans = {s: partial(scan_parallel, Path(root) / f, subdirs, parse_rgbnt201)
             for s, f in (("train", "train_171"), ("query", "test"))}
    read = partial(read_parallel, names=names, size=opt.size, ir_channels=opt.ir_channels)
    return build_reid("rgbnt201", names, scans, read, opt,
                      "{train_171,test}/{RGB,NI,TI}/<name>.jpg, query = gallery = test", root)


@register_dataset("msvr310")
def msvr310(root: str | Path, image_size: Sequence[int] = (128, 256),
            val_fraction: float = 0.1, seed: int = 0, ir_channels: int = 1,
            on_error: OnError = "raise", validate: str = "all",
            cache_dir: str | Path | None = None) -> DataBundle:
    """MSVR310 vehicles: <split>/<vid>/{vis,ni,th}/<img> with scene ids (module docstring)."""
    opt = options(image_size, val_fraction, seed, ir_channels, on_error, validate, cache_dir)
    names = ("rgb", "nir", "tir")
    folders = {"train": "bounding_box_train", "query": "query3", "gallery": "bounding_box_test"}
    scans = {s: partial(scan_msvr310, Path(root) / f) for s, f in folders.items()}
    read = partial(read_parallel, names=names, size=opt.size, ir_channels=opt.ir_channels)
    return build_reid("msvr310", names, scans, read, opt,
                      "<split>/<vid>/{vis,ni,th}/<img>, vid=img[0:4] scene=img[6:9] cam=img[11]",
                      root)
