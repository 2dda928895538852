"""tools/fetch_data.py: the pinned digests match the local copies `make data` installed; download, checksum,
.deb unpacking and atomic placement work (offline, with file:// URLs)."""

import dataclasses
import gzip
import hashlib
import io
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import fetch_data  # noqa: E402

LOCAL = ROOT / "_cache" / "data"


@pytest.mark.parametrize("name", sorted(fetch_data.DATASETS))
def test_pinned_digests_match_the_copies_make_data_installed(name):
    dataset = fetch_data.DATASETS[name]
    folder = LOCAL / dataset.folder
    if not folder.is_dir():
        pytest.skip(f"{folder} is not there: `make data` (tools/install_data.sh) installs it")
    assert fetch_data.problems(dataset, folder) == []


def test_every_dataset_pins_what_it_installs():
    for dataset in fetch_data.DATASETS.values():
        assert dataset.contents, dataset.name
        assert all(len(d) == 64 for d in dataset.contents.values())
        for remote in dataset.remotes:
            assert remote.urls and remote.unpack in ("keep", "deb", "tar")
            assert remote.sha256 is not None or remote.name in dataset.contents, f"{remote.name} is checked by nothing"


def tar_bytes(files: dict[str, bytes], mode: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def ar_bytes(members: dict[str, bytes]) -> bytes:
    out = b"!<arch>\n"
    for name, data in members.items():
        out += f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n".encode() + data + b"\n" * (len(data) % 2)
    return out


def test_unpack_deb_does_what_dpkg_x_does(tmp_path):
    deb = tmp_path / "pkg.deb"
    deb.write_bytes(
        ar_bytes(
            {
                "debian-binary": b"2.0\n",
                "control.tar.xz": tar_bytes({"./control": b"Package: x\n"}, "w:xz"),
                "data.tar.xz": tar_bytes({"./usr/share/x/a.txt": b"odd", "./usr/share/x/b.txt": b"even"}, "w:xz"),
            }
        )
    )
    fetch_data.unpack_deb(deb, tmp_path / "out")
    assert (tmp_path / "out/usr/share/x/a.txt").read_bytes() == b"odd"
    assert (tmp_path / "out/usr/share/x/b.txt").read_bytes() == b"even"
    assert not (tmp_path / "out/control").exists()
    with pytest.raises(ValueError, match="not a Debian package"):
        fetch_data.deb_members(b"PK\x03\x04")


def test_digest_of_a_gz_is_of_its_content_and_of_a_folder_covers_names(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d/a.gz").write_bytes(gzip.compress(b"data", compresslevel=1))
    (tmp_path / "e.gz").write_bytes(gzip.compress(b"data", compresslevel=9))
    assert (
        fetch_data.digest(tmp_path / "d/a.gz")
        == hashlib.sha256(b"data").hexdigest()
        == fetch_data.digest(tmp_path / "e.gz")
    )
    before = fetch_data.digest(tmp_path / "d")
    (tmp_path / "d/a.gz").rename(tmp_path / "d/b.gz")
    assert fetch_data.digest(tmp_path / "d") != before


def served(tmp_path):
    """A tarball dataset served from file:// URLs, the first of which does not exist."""
    archive = tmp_path / "srv" / "texts.tar.gz"
    archive.parent.mkdir()
    archive.write_bytes(tar_bytes({"pkg/texts/a.txt": b"to be", "pkg/texts/b.txt": b"or not"}, "w:gz"))
    probe = tmp_path / "probe"
    with tarfile.open(archive) as t:
        t.extractall(probe, filter="data")
    remote = fetch_data.Remote(
        "texts.tar.gz",
        ((tmp_path / "srv/missing.tar.gz").as_uri(), archive.as_uri()),
        fetch_data.sha256_file(archive),
        "tar",
    )
    return fetch_data.Dataset("texts", "texts", (remote,), {"pkg/texts": fetch_data.digest(probe / "pkg/texts")})


def test_fetch_downloads_checks_unpacks_and_is_idempotent(tmp_path):
    dataset = served(tmp_path)
    root = tmp_path / "data"
    assert fetch_data.fetch(dataset, root).startswith("texts: fetched into")
    assert (root / "texts/pkg/texts/a.txt").read_bytes() == b"to be"
    assert fetch_data.fetch(dataset, root).startswith("texts: already in")
    assert sorted(p.name for p in root.iterdir()) == ["texts"], "no staging folder is left behind"


def test_fetch_refuses_a_wrong_checksum_and_leaves_nothing(tmp_path):
    dataset = served(tmp_path)
    bad = dataclasses.replace(dataset, remotes=(dataclasses.replace(dataset.remotes[0], sha256="0" * 64),))
    root = tmp_path / "data"
    with pytest.raises(RuntimeError, match="could not fetch texts.tar.gz: .*missing.tar.gz.*SHA-256"):
        fetch_data.fetch(bad, root)
    assert list(root.iterdir()) == []
    wrong_content = dataclasses.replace(dataset, contents={"pkg/texts": "1" * 64})
    with pytest.raises(RuntimeError, match="differ from the pinned ones"):
        fetch_data.fetch(wrong_content, root)
    assert list(root.iterdir()) == []


def test_command_line_names_an_unknown_dataset(capsys):
    assert fetch_data.main(["no-such-data"]) == 2
    assert "unknown dataset(s) no-such-data" in capsys.readouterr().err
