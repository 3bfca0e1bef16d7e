"""Index folders built in shards (--shard-size): same answers as one file, kept across updates, undone by 0."""

import hashlib

import numpy as np
import pytest
from click.testing import CliRunner

import naive
from hashtool.errors import ArgumentError
from hashtool.hashindex import FlatIndex, ShardedIndex
from hashtool.store.build import EncoderInfo, build
from hashtool.store.store import IndexStore

NBITS = 16


def fake_encode(paths, progress):
    """Code = first 2 bytes of sha256(content): a 16-bit space, so distances tie a lot."""
    digests = [hashlib.sha256(open(p, "rb").read()).digest() for p in paths]
    progress(len(paths))
    codes = np.array([np.frombuffer(d[:2], dtype=np.uint8) for d in digests], dtype=np.uint8).reshape(-1, 2)
    return codes, np.arange(len(paths), dtype=np.int64), [], [d.hex() for d in digests]


@pytest.fixture
def encoder(tmp_path):
    p = tmp_path / "enc.onnx"
    p.write_bytes(b"fake encoder")
    return EncoderInfo(path=str(p), sha256="cd" * 32, nbits=NBITS, method="fake")


def make_folder(root, n, salt=b""):
    root.mkdir(exist_ok=True)
    for i in range(n):
        (root / f"{i:03d}.png").write_bytes(b"img" + salt + str(i).encode())
    return root


def _run(folder, path, encoder, **kw):
    return build(folder, IndexStore(path), encoder, fake_encode, extensions=[".png"], **kw)


def test_sharded_build_answers_like_one_file_and_survives_updates(tmp_path, encoder):
    folder = make_folder(tmp_path / "img", 57)
    _run(folder, tmp_path / "one", encoder)
    _run(folder, tmp_path / "sh", encoder, shard_size=10)
    gen = IndexStore(tmp_path / "sh").current()
    assert gen.shards_path.is_file() and not gen.codes_path.exists()
    assert sorted(p.name for p in gen.path.glob("codes-*.hidx")) == [f"codes-{i:05d}.hidx" for i in range(6)]
    one = IndexStore(tmp_path / "one").current().open_codes()
    sharded = gen.open_codes()
    assert isinstance(sharded, ShardedIndex) and isinstance(one, FlatIndex)
    queries = one.codes()[:9]
    for got, want in zip(sharded.search(queries, 13), naive.knn_search(queries, one.codes(), one.ids, 13)):
        np.testing.assert_array_equal(got, want)
    for got, want in zip(sharded.range_search(queries, 3), one.range_search(queries, 3)):
        np.testing.assert_array_equal(got, want)

    # an update (3 removed, 2 changed, 4 added) without --shard-size keeps the shards
    for i in (1, 2, 3):
        (folder / f"{i:03d}.png").unlink()
    for i in (10, 11):
        (folder / f"{i:03d}.png").write_bytes(b"changed" + str(i).encode())
    for i in range(100, 104):
        (folder / f"{i:03d}.png").write_bytes(b"new" + str(i).encode())
    r_sh = _run(folder, tmp_path / "sh", encoder)
    r_one = _run(folder, tmp_path / "one", encoder)
    assert (r_sh.added, r_sh.updated, r_sh.removed, r_sh.total) == (r_one.added, r_one.updated, r_one.removed, r_one.total) == (4, 2, 3, 58)
    sharded = IndexStore(tmp_path / "sh").current().open_codes()
    one = IndexStore(tmp_path / "one").current().open_codes()
    assert isinstance(sharded, ShardedIndex) and all(len(s) <= 10 for s in sharded.shards)
    np.testing.assert_array_equal(sharded.ids, one.ids)
    np.testing.assert_array_equal(sharded.codes(), one.codes())

    # --shard-size 0 writes one file again, even with nothing else to do
    _run(folder, tmp_path / "sh", encoder, shard_size=0)
    gen = IndexStore(tmp_path / "sh").current()
    assert gen.codes_path.is_file() and not gen.shards_path.exists()
    np.testing.assert_array_equal(gen.open_codes().codes(), one.codes())


def test_bad_shard_size_is_refused_before_any_work(tmp_path, encoder):
    folder = make_folder(tmp_path / "img", 3)
    with pytest.raises(ArgumentError, match="--shard-size"):
        _run(folder, tmp_path / "idx", encoder, shard_size=-1)
    assert not (tmp_path / "idx").exists() or not IndexStore(tmp_path / "idx").exists()


def test_cli_shard_size_and_query(tmp_path):
    from PIL import Image

    from hashtool.cli import main

    folder = tmp_path / "img"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray(rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    runner = CliRunner()
    for name, extra in (("one", []), ("sh", ["--shard-size", "5"])):
        r = runner.invoke(main, ["index", "build", str(folder), "--index", str(tmp_path / name), "--quiet", *extra])
        assert r.exit_code == 0, r.output
    assert IndexStore(tmp_path / "sh").current().shards_path.is_file()
    answers = []
    for name in ("one", "sh"):
        r = runner.invoke(main, ["query", str(folder / "3.png"), "-k", "12", "--json", "--index", str(tmp_path / name)])
        assert r.exit_code == 0, r.output
        answers.append(r.output)
    assert answers[0] == answers[1]
    r = runner.invoke(main, ["index", "build", str(folder), "--index", str(tmp_path / "x"), "--shard-size", "-2"])
    assert r.exit_code != 0 and "--shard-size" in r.output
