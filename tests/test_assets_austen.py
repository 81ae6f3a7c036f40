"""Jane Austen's text: read from the cache (or HF_ATTN_AUSTEN), prepared once from janeaustenr's R lazy-load data."""
import gzip
import struct
import zlib

import pytest

from hf_attn import MissingDependencyError, assets



def _serialized(obj, tmp_path) -> bytes:
    import rdata

    path = tmp_path / "obj.rds"
    rdata.write_rds(path, obj, compression=None)
    return path.read_bytes()


def _block(obj, tmp_path) -> bytes:
    """One lazy-load block as R writes it: 4-byte big-endian length, then the zlib-compressed serialization."""
    raw = _serialized(obj, tmp_path)
    return struct.pack(">I", len(raw)) + zlib.compress(raw)


def fake_janeaustenr(tmp_path):
    books = {"emma": ["EMMA", "By Jane Austen", "Emma Woodhouse, handsome, clever, and rich,"],
             "persuasion": ["Persuasion", "Sir Walter Elliot, of Kellynch Hall,"]}
    data = tmp_path / "usr/lib/R/site-library/janeaustenr/data"
    data.mkdir(parents=True)
    rdb, index = b"", {}
    for name, lines in books.items():
        block = _block(lines, tmp_path)
        index[name] = [len(rdb), len(block)]
        rdb += block
    (data / "Rdata.rdb").write_bytes(rdb)
    # the index is a gzip file, as in the Debian package r-cran-janeaustenr 1.0.0
    (data / "Rdata.rdx").write_bytes(gzip.compress(_serialized({"variables": index}, tmp_path)))
    return tmp_path / "usr"


def test_prepare_from_an_extracted_package_then_read(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_ATTN_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("HF_ATTN_AUSTEN", raising=False)
    target = assets.prepare_austen(fake_janeaustenr(tmp_path))
    assert target == tmp_path / "cache" / "austen.txt"
    text = assets.austen_text()
    assert text.index("Emma Woodhouse") < text.index("Sir Walter Elliot")  # the novels in publication order


def test_missing_text_names_the_preparation(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_ATTN_AUSTEN", str(tmp_path / "nope.txt"))
    with pytest.raises(MissingDependencyError, match="apt-get download r-cran-janeaustenr"):
        assets.austen_text()
    with pytest.raises(MissingDependencyError, match="Rdata.rdx"):
        assets.prepare_austen(tmp_path)


def test_env_var_points_at_any_text(tmp_path, monkeypatch):
    (tmp_path / "a.txt").write_text("It is a truth universally acknowledged", encoding="utf-8")
    monkeypatch.setenv("HF_ATTN_AUSTEN", str(tmp_path / "a.txt"))
    assert assets.austen_text().startswith("It is a truth")
