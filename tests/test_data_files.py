"""Data files never run code and never end in a raw traceback: .pkl allowlist, bad .npz."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import pytest

from trainers.data import DataError, create_dataset
from trainers.data.arrays import load_array


def _evil_pickles(marker: Path) -> dict[str, bytes]:
    """Pickles that create ``marker`` when a permissive unpickler loads them."""
    code = f'__import__("pathlib").Path(r"{marker}").touch()'.encode()
    return {
        # protocol 4 resolves dotted names: numpy.dtypes.__builtins__.get('eval')(code)
        "dotted": (b"\x80\x04cnumpy.dtypes\n__builtins__.get\n(Veval\ntR(V" + code
                   + b"\ntR."),
        "os.system": b"cos\nsystem\n(Vtouch " + str(marker).encode() + b"\ntR.",
        "builtins.eval": b"cbuiltins\neval\n(V" + code + b"\ntR.",
        "numpy attribute": b"\x80\x04cnumpy\ntesting.os.system\n(Vtouch "
                           + str(marker).encode() + b"\ntR.",
        "codec": (b"c_codecs\nencode\n(Vx\nVutf-8\ntR."),
    }


@pytest.mark.parametrize("kind", ["dotted", "os.system", "builtins.eval", "numpy attribute",
                                  "codec"])
def test_malicious_pkl_is_refused_without_running(tmp_path: Path, kind: str) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "clip.pkl"
    path.write_bytes(_evil_pickles(marker)[kind])
    with pytest.raises(DataError, match=r"clip.pkl: cannot read array \(refusing .*\.npy"):
        load_array(path)
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_array_pickles_of_every_protocol_still_load(tmp_path: Path, protocol: int) -> None:
    arr = np.arange(12, dtype=np.float32).reshape(3, 4)
    for i, a in enumerate((arr, arr.T, arr.astype(np.int16), np.asfortranarray(arr))):
        path = tmp_path / f"a{i}.pkl"
        path.write_bytes(pickle.dumps(a, protocol=protocol))
        got = load_array(path)
        assert got.dtype == a.dtype and np.array_equal(got, a)


def test_numpy1_array_pickle_loads(tmp_path: Path) -> None:
    """numpy 1.x wrote numpy.core.multiarray (what OGM-GE's files hold)."""
    arr = np.linspace(0, 1, 6).reshape(2, 3)
    data = pickle.dumps(arr, protocol=2).replace(b"numpy._core.multiarray",
                                                 b"numpy.core.multiarray")
    assert b"numpy.core.multiarray" in data
    (tmp_path / "old.pkl").write_bytes(data)
    assert np.array_equal(load_array(tmp_path / "old.pkl"), arr)


def test_object_and_non_array_pickles_are_refused(tmp_path: Path) -> None:
    (tmp_path / "obj.pkl").write_bytes(pickle.dumps(np.array(["a", 1], dtype=object)))
    with pytest.raises(DataError, match="obj.pkl: array of dtype object, expected numbers"):
        load_array(tmp_path / "obj.pkl")
    (tmp_path / "list.pkl").write_bytes(pickle.dumps([1.0, 2.0]))
    with pytest.raises(DataError, match="list.pkl: holds a list, not a numpy array"):
        load_array(tmp_path / "list.pkl")


def _npz_bytes() -> bytes:
    from trainers.data.avdigits import ASSET
    from trainers.data.avdigits import resources as res

    return res.files("trainers.data").joinpath("assets", ASSET).read_bytes()


@pytest.mark.parametrize("damage", ["truncated", "not a zip", "corrupt member", "empty"])
def test_bad_npz_is_a_one_line_error_naming_the_file(tmp_path: Path, damage: str) -> None:
    good = _npz_bytes()
    bad = {"truncated": good[: len(good) // 2], "not a zip": b"hello, not an archive",
           "empty": b"",
           "corrupt member": good[:300] + bytes(b ^ 0xFF for b in good[300:400]) + good[400:]}
    path = tmp_path / "digits.npz"
    path.write_bytes(bad[damage])
    with pytest.raises(DataError) as err:
        create_dataset("avdigits", path=str(path))
    msg = str(err.value)
    assert str(path) in msg and "\n" not in msg and "build_avdigits" in msg


def test_bad_npy_is_a_data_error(tmp_path: Path) -> None:
    buf = io.BytesIO()
    np.save(buf, np.ones((4, 4)))
    (tmp_path / "x.npy").write_bytes(buf.getvalue()[:-7])
    with pytest.raises(DataError, match=r"x.npy: cannot read array"):
        load_array(tmp_path / "x.npy")
