"""Storage: the one module that reads and writes run stores, results and reports.

A storage location is a local path (an NFS/EFS mount included) or any URI that
``pyarrow.fs.FileSystem.from_uri`` understands (``s3://bucket/prefix``, ``gs://...``,
``hdfs://...``). Everything goes through :class:`Storage`, which pairs a ``pyarrow.fs``
filesystem with a root inside it, so no caller ever applies ``os.path`` or ``Path`` to a URI.
Ray Train and Tune are given the same filesystem (``storage_filesystem``), so an S3 endpoint or
credentials that the user configured reach them too.

S3-compatible servers other than AWS (MinIO, a local test server) are reached through
``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3``), which pyarrow itself does not read.

Guarantees, on every backend: :meth:`Storage.write_bytes` is all-or-nothing (local files are
written under a unique temporary name and renamed; an object store makes an object visible only
when its upload completes), so a reader never sees a partial file, and two writers of the same
file never share a temporary file. Files that a worker needs from a remote store (checkpoints of
finished runs) are fetched once per node into a local cache (:meth:`Storage.local_copy`).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import pyarrow.fs as pafs

CACHE_ENV = "FUSION_CACHE_DIR"
ENDPOINT_ENVS = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")


class StorageError(OSError):
    """The storage location cannot be used; the message says what to pass instead."""


def _s3_from_env(uri: str) -> tuple[pafs.FileSystem, str] | None:
    """An S3 filesystem aimed at ``$AWS_ENDPOINT_URL`` when set (pyarrow ignores it)."""
    endpoint = next((os.environ[k] for k in ENDPOINT_ENVS if os.environ.get(k)), "")
    if not endpoint or "endpoint_override" in uri:
        return None
    parsed = urlparse(endpoint)
    # Keys from the environment are passed on explicitly so that the filesystem, pickled to Ray
    # workers, reaches the same server with them (no instance profile behind a custom endpoint).
    keys = {"access_key": os.environ["AWS_ACCESS_KEY_ID"],
            "secret_key": os.environ.get("AWS_SECRET_ACCESS_KEY", "")} \
        if os.environ.get("AWS_ACCESS_KEY_ID") else {}
    fs = pafs.S3FileSystem(**keys, endpoint_override=parsed.netloc or parsed.path,
                           scheme=parsed.scheme or "https",
                           region=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
                           connect_timeout=5, request_timeout=30,
                           retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=2))
    rest = uri.split("://", 1)[1].split("?", 1)[0]
    return fs, rest.rstrip("/")


def _resolve(location: str) -> tuple[pafs.FileSystem, str, str]:
    """(filesystem, root inside it, canonical location) of a path or URI."""
    if "://" not in location:
        local = os.path.abspath(os.path.expanduser(location))
        return pafs.LocalFileSystem(), local, local
    scheme = location.split("://", 1)[0].lower()
    if scheme == "file":
        local = location.split("://", 1)[1]
        return pafs.LocalFileSystem(), local, local
    if scheme == "s3" and (found := _s3_from_env(location)) is not None:
        fs, root = found
        return fs, root, f"s3://{root}"
    try:
        fs, root = pafs.FileSystem.from_uri(location)
    except (pa_errors() + (ValueError,)) as err:
        raise StorageError(f"storage {location!r} is not a location pyarrow can open "
                           f"({str(err).splitlines()[0]}); use a local path or a URI such as "
                           "s3://bucket/prefix or gs://bucket/prefix") from None
    return fs, root.rstrip("/"), location.split("?", 1)[0].rstrip("/")


def pa_errors() -> tuple[type[BaseException], ...]:
    import pyarrow as pa

    return (pa.ArrowException, OSError)


@dataclass(frozen=True)
class Storage:
    """A folder on some filesystem. Picklable: the filesystem travels with it to Ray workers."""

    location: str  # canonical: an absolute local path or scheme://bucket/prefix
    fs: pafs.FileSystem
    root: str  # the same folder as a path inside ``fs``

    @classmethod
    def open(cls, location: str | Path | Storage) -> Storage:
        if isinstance(location, Storage):
            return location
        text = str(location).strip()
        if not text:
            raise StorageError("storage location is empty; pass a folder or a URI such as "
                               "s3://bucket/prefix")
        fs, root, canonical = _resolve(text)
        return cls(canonical, fs, root)

    # --- names --------------------------------------------------------------------------
    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    def path(self, *parts: str) -> str:
        """``parts`` joined under the root, as a path inside :attr:`fs`."""
        return "/".join([self.root, *[p.strip("/") for p in parts if p]])

    def uri(self, *parts: str) -> str:
        """``parts`` joined under the location, for messages and for pandas/pyarrow readers."""
        return "/".join([self.location, *[p.strip("/") for p in parts if p]])

    def child(self, *parts: str) -> Storage:
        return Storage(self.uri(*parts), self.fs, self.path(*parts))

    def __str__(self) -> str:
        return self.location

    # --- queries ------------------------------------------------------------------------
    def _info(self, *parts: str) -> pafs.FileInfo:
        try:
            return self.fs.get_file_info(self.path(*parts))
        except pa_errors() as err:
            raise StorageError(f"cannot read {self.uri(*parts)}: {_first(err)}") from None

    def is_file(self, *parts: str) -> bool:
        return self._info(*parts).type == pafs.FileType.File

    def is_dir(self, *parts: str) -> bool:
        return self._info(*parts).type == pafs.FileType.Directory

    def list(self, *parts: str) -> list[pafs.FileInfo]:
        """Direct children of a folder (empty when it does not exist)."""
        if not self.is_dir(*parts):
            return []
        selector = pafs.FileSelector(self.path(*parts), allow_not_found=True)
        return sorted(self.fs.get_file_info(selector), key=lambda f: f.path)

    # --- reading and writing --------------------------------------------------------------
    def read_bytes(self, *parts: str) -> bytes:
        try:
            with self.fs.open_input_stream(self.path(*parts)) as stream:
                return stream.read()
        except FileNotFoundError:
            raise
        except pa_errors() as err:
            raise StorageError(f"cannot read {self.uri(*parts)}: {_first(err)}") from None

    def read_text(self, *parts: str) -> str:
        return self.read_bytes(*parts).decode()

    def write_bytes(self, data: bytes, *parts: str) -> None:
        """All-or-nothing write (see the module docstring)."""
        target = self.path(*parts)
        parent = target.rsplit("/", 1)[0]
        try:
            if self.is_local:
                os.makedirs(parent, exist_ok=True)
                fd, tmp = tempfile.mkstemp(dir=parent, prefix=".", suffix=".tmp")
                try:
                    with os.fdopen(fd, "wb") as out:
                        out.write(data)
                    os.replace(tmp, target)
                except BaseException:
                    Path(tmp).unlink(missing_ok=True)
                    raise
                return
            self.fs.create_dir(parent, recursive=True)
            with self.fs.open_output_stream(target) as out:
                out.write(data)
        except pa_errors() as err:
            raise StorageError(f"cannot write {self.uri(*parts)}: {_first(err)}") from None

    def write_text(self, text: str, *parts: str) -> None:
        self.write_bytes(text.encode(), *parts)

    def delete(self, *parts: str) -> None:
        """Remove a file or a whole folder; nothing happens when it does not exist."""
        info = self._info(*parts)
        if info.type == pafs.FileType.Directory:
            self.fs.delete_dir(info.path)
        elif info.type == pafs.FileType.File:
            self.fs.delete_file(info.path)

    def remove_stale_temps(self, *parts: str, older_than_s: float = 3600.0) -> list[str]:
        """Delete temporary files (``.<name>.tmp``) that a writer killed mid-write left in a
        local folder; younger ones may belong to a live writer and stay. Object stores have
        none (an upload appears whole or not at all)."""
        if not self.is_local or not self.is_dir(*parts):
            return []
        folder, now, removed = Path(self.path(*parts)), time.time(), []
        for tmp in folder.glob(".*.tmp"):
            try:
                if now - tmp.stat().st_mtime > older_than_s:
                    tmp.unlink()
                    removed.append(tmp.name)
            except FileNotFoundError:
                continue
        return removed

    def makedirs(self, *parts: str) -> None:
        try:
            self.fs.create_dir(self.path(*parts), recursive=True)
        except pa_errors() as err:
            raise StorageError(f"cannot create {self.uri(*parts)}: {_first(err)}") from None

    def upload_dir(self, local: Path, *parts: str) -> None:
        pafs.copy_files(str(local), self.path(*parts), source_filesystem=pafs.LocalFileSystem(),
                        destination_filesystem=self.fs)

    # --- local copies -------------------------------------------------------------------------
    def local_copy(self, *parts: str) -> Path:
        """A local path of the file: itself when local, else a copy in this node's cache,
        fetched once (concurrent fetches on one node each write a unique temporary name)."""
        if self.is_local:
            return Path(self.path(*parts))
        key = hashlib.sha256(self.uri(*parts).encode()).hexdigest()[:16]
        target = cache_dir() / key / parts[-1]
        if not target.is_file():
            data = self.read_bytes(*parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{uuid.uuid4().hex}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, target)
        return target

    def check_writable(self) -> Storage:
        """Create the folder and write and delete a marker; one-line :class:`StorageError`
        (missing bucket, no credentials, endpoint not answering, read-only folder) if not."""
        marker = f".write-check-{uuid.uuid4().hex}"
        try:
            if not self.is_local:
                _check_bucket(self)
            self.makedirs()
            self.write_bytes(b"ok", marker)
            self.delete(marker)
        except StorageError as err:
            raise StorageError(f"storage {self.location!r} is not writable ({_reason(err)}); "
                               "pass --storage <a folder or bucket you can write> or set "
                               "FUSION_STORAGE") from None
        return self


def _check_bucket(store: Storage) -> None:
    bucket = store.root.split("/", 1)[0]
    try:
        info = store.fs.get_file_info(bucket)
    except pa_errors() as err:
        raise StorageError(_first(err)) from None
    if info.type == pafs.FileType.NotFound:
        raise StorageError(f"bucket {bucket!r} does not exist")


def _first(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def _reason(err: StorageError) -> str:
    text = str(err)
    return text.split(": ", 1)[1] if text.startswith("cannot ") and ": " in text else text


def cache_dir() -> Path:
    """This node's cache of files fetched from remote storage (``$FUSION_CACHE_DIR``)."""
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path(tempfile.gettempdir()) / "fusion-orchestrator-cache"
