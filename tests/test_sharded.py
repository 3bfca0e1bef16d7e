"""ShardedIndex against one FlatIndex over all codes and the naive twin, ties included."""

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import naive
from hashtool.errors import ArgumentError, IndexFormatError
from hashtool.hashindex import FlatIndex, ShardedIndex, load_index
from hashtool.hashindex.sharded import merge_knn, merge_range


@st.composite
def sharded_case(draw):
    nbits = draw(st.sampled_from([8, 16, 64, 72]))
    n = draw(st.integers(0, 120))
    # a small pool of distinct codes, repeated: many exact ties and many equal distances
    pool = draw(st.integers(1, 12))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(pool, nbits // 8), dtype=np.uint8)
    codes = base[rng.integers(0, pool, size=n)]
    ids = rng.permutation(10 * n + 5)[:n].astype(np.int64)  # distinct, in no particular order
    queries = np.concatenate([base[: 3], rng.integers(0, 256, size=(3, nbits // 8), dtype=np.uint8)])
    shard_size = draw(st.integers(1, 40))
    structure = draw(st.sampled_from(["flat", "mih"]))
    threads = draw(st.sampled_from([1, 2, 4]))
    k = draw(st.integers(1, 2 * n + 3))
    radius = draw(st.integers(0, nbits))
    return nbits, codes, ids, queries, shard_size, structure, threads, k, radius


@given(sharded_case())
def test_search_equals_one_flat_index_and_the_naive_twin(case):
    nbits, codes, ids, queries, shard_size, structure, threads, k, radius = case
    sharded = ShardedIndex(nbits, shard_size=shard_size, structure=structure, threads=threads)
    # added in several calls: the last shard is filled before a new one opens
    cut = len(codes) // 3
    sharded.add(codes[:cut], ids[:cut])
    sharded.add(codes[cut:], ids[cut:])
    assert len(sharded) == len(codes)
    assert all(len(s) <= shard_size for s in sharded.shards)
    assert len(sharded.shards) == -(-len(codes) // shard_size)
    flat = FlatIndex(nbits)
    flat.add(codes, ids)

    d, i = sharded.search(queries, k)
    fd, fi = flat.search(queries, k)
    nd, ni = naive.knn_search(queries, codes, ids, k)
    np.testing.assert_array_equal(d, nd)
    np.testing.assert_array_equal(i, ni)
    np.testing.assert_array_equal(d, fd)
    np.testing.assert_array_equal(i, fi)
    assert d.dtype == np.int32 and i.dtype == np.int64

    lims, rd, ri = sharded.range_search(queries, radius)
    nl, nrd, nri = naive.range_search(queries, codes, ids, radius)
    np.testing.assert_array_equal(lims, nl)
    np.testing.assert_array_equal(rd, nrd)
    np.testing.assert_array_equal(ri, nri)
    np.testing.assert_array_equal(sharded.ids, np.sort(ids))
    np.testing.assert_array_equal(sharded.codes(), flat.codes())


@given(sharded_case(), st.data())
def test_remove_then_search_and_save_load(tmp_path_factory, case, data):
    nbits, codes, ids, queries, shard_size, structure, threads, k, radius = case
    sharded = ShardedIndex(nbits, shard_size=shard_size, structure=structure, threads=threads)
    sharded.add(codes, ids)
    gone = data.draw(st.lists(st.sampled_from(ids.tolist()), unique=True) if len(ids) else st.just([]))
    assert sharded.remove(gone) == len(gone)
    keep = ~np.isin(ids, gone)
    path = tmp_path_factory.mktemp("shards") / "codes.shards"
    sharded.save(path)
    loaded = ShardedIndex.load(path, mmap=True, threads=threads)
    for index in (sharded, loaded):
        d, i = index.search(queries, k)
        nd, ni = naive.knn_search(queries, codes[keep], ids[keep], k)
        np.testing.assert_array_equal(d, nd)
        np.testing.assert_array_equal(i, ni)
    assert len(loaded) == int(keep.sum())


def test_default_ids_continue_and_validation():
    index = ShardedIndex(16, shard_size=2)
    index.add(np.zeros((3, 2), np.uint8))
    index.add(np.ones((2, 2), np.uint8))
    assert index.ids.tolist() == [0, 1, 2, 3, 4]
    assert [len(s) for s in index.shards] == [2, 2, 1]
    with pytest.raises(ArgumentError, match="already in the index"):
        index.add(np.zeros((1, 2), np.uint8), [3])
    with pytest.raises(ArgumentError, match="duplicates"):
        index.add(np.zeros((2, 2), np.uint8), [7, 7])
    with pytest.raises(ArgumentError, match=">= 0"):
        index.add(np.zeros((1, 2), np.uint8), [-4])
    assert len(index) == 5  # nothing was added by the failed calls
    with pytest.raises(ArgumentError, match="not in the index"):
        index.remove([1, 99])
    assert len(index) == 5
    assert index.remove([1, 99], missing="ignore") == 1
    with pytest.raises(ArgumentError, match="shard_size"):
        ShardedIndex(16, shard_size=0)
    with pytest.raises(ArgumentError, match="k must be"):
        index.search(np.zeros((1, 2), np.uint8), 0)


def test_empty_index_pads():
    index = ShardedIndex(64, shard_size=10)
    d, i = index.search(np.zeros((2, 8), np.uint8), 3)
    assert (d == -1).all() and (i == -1).all() and d.shape == (2, 3)
    lims, rd, ri = index.range_search(np.zeros((2, 8), np.uint8), 5)
    assert lims.tolist() == [0, 0, 0] and rd.shape == (0,)


def test_shard_files_are_ordinary_indexes_and_bad_manifests_are_named(tmp_path):
    rng = np.random.default_rng(1)
    codes = rng.integers(0, 256, size=(25, 8), dtype=np.uint8)
    index = ShardedIndex(64, shard_size=10)
    index.add(codes)
    path = tmp_path / "codes.shards"
    index.save(path)
    assert sorted(p.name for p in tmp_path.glob("codes-*.hidx")) == ["codes-00000.hidx", "codes-00001.hidx", "codes-00002.hidx"]
    assert len(load_index(tmp_path / "codes-00002.hidx")) == 5
    # a smaller set written over it leaves no stale shard behind
    small = ShardedIndex(64, shard_size=100)
    small.add(codes[:3])
    small.save(path)
    assert sorted(p.name for p in tmp_path.glob("codes-*.hidx")) == ["codes-00000.hidx"]
    assert len(ShardedIndex.load(path)) == 3

    manifest = json.loads(path.read_text())
    manifest["shards"][0]["count"] = 4
    path.write_text(json.dumps(manifest))
    with pytest.raises(IndexFormatError, match="inconsistent"):
        ShardedIndex.load(path)
    path.write_text("{not json")
    with pytest.raises(IndexFormatError, match="unreadable shard manifest"):
        ShardedIndex.load(path)
    with pytest.raises(IndexFormatError, match="no such shard manifest"):
        ShardedIndex.load(tmp_path / "missing.shards")


@pytest.mark.parametrize("ids_a, ids_b, ok", [
    ([0, 1], [1, 2], False),  # ranges touch at a shared id
    ([0, 5], [2, 5], False),  # overlapping ranges, a shared id
    ([0, 5], [2, 3], True),  # overlapping ranges, no shared id
    ([4, 9], [0, 3], True),  # disjoint ranges in the other order
])
def test_load_rejects_an_id_in_two_shards(tmp_path, ids_a, ids_b, ok):
    a, b = FlatIndex(16), FlatIndex(16)
    a.add(np.zeros((2, 2), np.uint8), ids_a)
    b.add(np.ones((2, 2), np.uint8), ids_b)
    ShardedIndex(16, shards=[a, b]).save(tmp_path / "s.shards")
    if ok:
        assert len(ShardedIndex.load(tmp_path / "s.shards")) == 4
    else:
        with pytest.raises(IndexFormatError, match="two shards"):
            ShardedIndex.load(tmp_path / "s.shards")


def test_merges_break_ties_by_id_across_shards():
    # shard 0 holds ids 5 and 9 at distance 1, shard 1 holds id 7 at distance 1 and padding
    parts = [
        (np.array([[1, 1]], np.int32), np.array([[5, 9]], np.int64)),
        (np.array([[1, -1]], np.int32), np.array([[7, -1]], np.int64)),
    ]
    d, i = merge_knn(parts, 4, 8)
    assert d.tolist() == [[1, 1, 1, -1]] and i.tolist() == [[5, 7, 9, -1]]
    lims, rd, ri = merge_range(
        [(np.array([0, 2]), np.array([0, 2], np.int32), np.array([9, 3])), (np.array([0, 1]), np.array([0], np.int32), np.array([4]))], 1
    )
    assert lims.tolist() == [0, 3] and rd.tolist() == [0, 0, 2] and ri.tolist() == [4, 9, 3]
