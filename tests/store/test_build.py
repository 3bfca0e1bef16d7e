"""Incremental builds against a from-scratch twin, with a fake encoder (code = a hash of the content).

The fake encoder lets hypothesis run many add/modify/touch/delete/corrupt sequences quickly; the real
onnxruntime encoder is exercised by the CLI tests.
"""

import hashlib
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hashtool.errors import ArgumentError, ImageError, IndexFormatError
from hashtool.hashindex import load_index
from hashtool.store.build import EncoderInfo, build
from hashtool.store.store import IndexStore

NBITS = 32


class FakeEncoder:
    """Code = first 4 bytes of sha256(content); content starting with b"BAD" fails."""

    def __init__(self):
        self.calls: list[str] = []

    def __call__(self, paths, progress):
        codes, positions, failures, hashes = [], [], [], []
        for i, p in enumerate(paths):
            self.calls.append(p)
            data = open(p, "rb").read()
            if data.startswith(b"BAD"):
                failures.append((i, "fake: unreadable"))
                continue
            codes.append(np.frombuffer(hashlib.sha256(data).digest()[:4], dtype=np.uint8))
            positions.append(i)
            hashes.append(hashlib.sha256(data).hexdigest())
        progress(len(paths))
        codes = np.array(codes, dtype=np.uint8).reshape(-1, NBITS // 8)
        return codes, np.array(positions, dtype=np.int64), failures, hashes


def expected_code(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()[:4]


@pytest.fixture
def encoder_file(tmp_path):
    p = tmp_path / "enc.onnx"
    p.write_bytes(b"fake encoder")
    return EncoderInfo(path=str(p), sha256="ab" * 32, nbits=NBITS, method="fake")


def index_state(store: IndexStore) -> dict[str, bytes]:
    """path -> code bytes, read back through the catalog and the saved index."""
    gen = store.current()
    index = load_index(gen.codes_path, mmap=False)
    with gen.catalog() as cat:
        paths = cat.paths_for(index.ids.tolist())
        assert cat.count() == len(index)
    return {paths[i]: bytes(c) for i, c in zip(index.ids.tolist(), index.codes())}


ops = st.lists(
    st.tuples(st.sampled_from(["add", "modify", "touch", "delete", "corrupt", "fix"]), st.integers(0, 11), st.integers(0, 3)),
    min_size=1,
    max_size=12,
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops)
def test_incremental_equals_from_scratch(tmp_path_factory, encoder_file, sequence):
    # encoder_file is read-only, so sharing it across examples is safe
    root = tmp_path_factory.mktemp("imgs")
    store = IndexStore(tmp_path_factory.mktemp("idx") / "index")
    enc = FakeEncoder()
    mtime = 1_600_000_000_000_000_000
    for step, (op, k, v) in enumerate(sequence):
        path = root / f"d{k % 3}" / f"f{k}.png"
        path.parent.mkdir(exist_ok=True)
        if op == "add" or (op in ("modify", "touch", "fix", "corrupt") and not path.exists()):
            path.write_bytes(b"img %d %d" % (k, v))
        elif op == "modify":
            path.write_bytes(path.read_bytes() + b"+%d" % v)
        elif op == "corrupt":
            path.write_bytes(b"BAD" + path.read_bytes())
        elif op == "fix":
            path.write_bytes(path.read_bytes().removeprefix(b"BAD"))
        elif op == "delete" and path.exists():
            path.unlink()
        if path.exists():
            mtime += 1_000_000_000
            os.utime(path, ns=(mtime, mtime))
        old = index_state(store) if store.exists() else {}
        enc.calls.clear()
        report = build(root, store, encoder_file, enc, extensions=[".png"])
        # the twin: every readable file, its code from its content
        files = {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*.png")}
        good = {rel: expected_code(d) for rel, d in files.items() if not d.startswith(b"BAD")}
        assert index_state(store) == good
        assert report.total == len(good)
        assert sorted(f for f, _ in report.failures) == sorted(rel for rel, d in files.items() if d.startswith(b"BAD"))
        # only new, changed or previously failing files were encoded: a file whose content is the
        # same (only its mtime moved) is never encoded again
        for called in enc.calls:
            rel = os.path.relpath(called, root)
            assert rel not in old or old[rel] != expected_code(files[rel])


def test_unchanged_files_are_not_read_and_touch_does_not_reencode(tmp_path, encoder_file):
    root = tmp_path / "imgs"
    root.mkdir()
    for i in range(5):
        (root / f"{i}.png").write_bytes(b"x%d" % i)
    store = IndexStore(tmp_path / "idx")
    enc = FakeEncoder()
    r1 = build(root, store, encoder_file, enc, extensions=[".png"])
    assert (r1.added, len(enc.calls)) == (5, 5)
    enc.calls.clear()
    r2 = build(root, store, encoder_file, enc, extensions=[".png"])
    assert (r2.unchanged, len(enc.calls), r2.committed) == (5, 0, False)
    os.utime(root / "0.png", ns=(1, 1))
    r3 = build(root, store, encoder_file, enc, extensions=[".png"])
    assert (r3.touched, len(enc.calls), r3.committed) == (1, 0, True)


def test_strict_keeps_the_old_index(tmp_path, encoder_file):
    root = tmp_path / "imgs"
    root.mkdir()
    (root / "a.png").write_bytes(b"a")
    store = IndexStore(tmp_path / "idx")
    build(root, store, encoder_file, FakeEncoder(), extensions=[".png"])
    gen = store.current().name
    (root / "b.png").write_bytes(b"BAD")
    with pytest.raises(ImageError, match="b.png"):
        build(root, store, encoder_file, FakeEncoder(), extensions=[".png"], strict=True)
    assert store.current().name == gen and set(index_state(store)) == {"a.png"}


def test_guards_protect_existing_data(tmp_path, encoder_file):
    root = tmp_path / "imgs"
    root.mkdir()
    (root / "a.png").write_bytes(b"a")
    other = tmp_path / "other"
    other.mkdir()
    store = IndexStore(tmp_path / "idx")
    build(root, store, encoder_file, FakeEncoder(), extensions=[".png"])
    with pytest.raises(ArgumentError, match="built from"):
        build(other, store, encoder_file, FakeEncoder(), extensions=[".png"])
    wrong = EncoderInfo(path=encoder_file.path, sha256="cd" * 32, nbits=NBITS, method="fake")
    with pytest.raises(ArgumentError, match="encoder"):
        build(root, store, wrong, FakeEncoder(), extensions=[".png"])
    # a non-empty folder that is not an index is never written into
    (tmp_path / "notindex").mkdir()
    (tmp_path / "notindex" / "keep.txt").write_text("precious")
    with pytest.raises(ArgumentError, match="not a hashtool index"):
        build(root, IndexStore(tmp_path / "notindex"), encoder_file, FakeEncoder(), extensions=[".png"])
    assert (tmp_path / "notindex" / "keep.txt").read_text() == "precious"
    assert set(index_state(store)) == {"a.png"}


def test_crash_before_commit_leaves_old_generation(tmp_path, encoder_file, monkeypatch):
    root = tmp_path / "imgs"
    root.mkdir()
    (root / "a.png").write_bytes(b"a")
    store = IndexStore(tmp_path / "idx")
    build(root, store, encoder_file, FakeEncoder(), extensions=[".png"])
    (root / "b.png").write_bytes(b"b")

    def boom(self, gen):
        raise KeyboardInterrupt  # stands for a crash between writing the generation and switching to it

    monkeypatch.setattr(IndexStore, "commit", boom)
    with pytest.raises(KeyboardInterrupt):
        build(root, store, encoder_file, FakeEncoder(), extensions=[".png"])
    monkeypatch.undo()
    assert set(index_state(store)) == {"a.png"}
    build(root, store, encoder_file, FakeEncoder(), extensions=[".png"])
    assert set(index_state(store)) == {"a.png", "b.png"}


def test_broken_store_is_reported(tmp_path, encoder_file):
    root = tmp_path / "imgs"
    root.mkdir()
    (root / "a.png").write_bytes(b"a")
    store = IndexStore(tmp_path / "idx")
    build(root, store, encoder_file, FakeEncoder(), extensions=[".png"])
    (store.path / "CURRENT").write_text("gen-999999\n")
    with pytest.raises(IndexFormatError, match="not a generation"):
        store.current()
    with pytest.raises(IndexFormatError, match="no index here"):
        IndexStore(tmp_path / "nothing").current()
