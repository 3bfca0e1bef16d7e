import numpy as np
import pytest
from hypothesis import given, strategies as st

import naive
from hashtool.codes import pack
from hashtool.errors import ArgumentError, CodeError
from hashtool.evaluate import hamming_distances, retrieval_metrics


def codes_from_bits(rows):
    return pack(np.array(rows, dtype=np.uint8))


def test_hand_computed_ranking_with_ties():
    # One 8-bit query (all zeros); database distances 1, 0, 1, 2, 0 with labels r, n, r, r, n.
    q = codes_from_bits([[0] * 8])
    db = codes_from_bits([
        [1, 0, 0, 0, 0, 0, 0, 0],  # d=1, relevant
        [0] * 8,                   # d=0, not relevant
        [0, 1, 0, 0, 0, 0, 0, 0],  # d=1, relevant
        [1, 1, 0, 0, 0, 0, 0, 0],  # d=2, relevant
        [0] * 8,                   # d=0, not relevant
    ])
    m = retrieval_metrics(q, [1], db, [1, 0, 1, 1, 0], topk=(1, 3), map_at=(3,))
    # Ranking by (distance, position): items 1, 4, 0, 2, 3 -> relevance 0, 0, 1, 1, 1.
    assert m["map"] == pytest.approx((1 / 3 + 2 / 4 + 3 / 5) / 3)
    assert m["map@3"] == pytest.approx(1 / 3)  # one relevant in the top 3, at position 3
    assert m["precision@1"] == 0.0
    assert m["precision@3"] == pytest.approx(1 / 3)
    assert m["precision_r2"] == pytest.approx(3 / 5)
    assert m["empty_r2"] == 0.0
    pr = m["pr_curve"]
    assert pr["precision"][0] == 0.0 and pr["recall"][0] == 0.0
    assert pr["precision"][1] == pytest.approx(2 / 4) and pr["recall"][1] == pytest.approx(2 / 3)
    assert pr["precision"][2] == pytest.approx(3 / 5) and pr["recall"][2] == pytest.approx(1.0)


def test_ties_follow_database_order():
    # Both items at distance 0; only the first is relevant in one case, only the second in the other.
    q = codes_from_bits([[0] * 8])
    db = codes_from_bits([[0] * 8, [0] * 8])
    assert retrieval_metrics(q, [1], db, [1, 0])["map"] == pytest.approx(1.0)
    assert retrieval_metrics(q, [1], db, [0, 1])["map"] == pytest.approx(0.5)


def test_query_without_relevant_items_is_left_out_of_map():
    q = codes_from_bits([[0] * 8, [1] * 8])
    db = codes_from_bits([[0] * 8, [1] * 8])
    m = retrieval_metrics(q, [0, 7], db, [0, 1])
    assert m["queries_without_relevant"] == 1
    assert m["map"] == pytest.approx(1.0)
    assert m["map@1000"] == pytest.approx(0.5)  # the query without relevant items scores 0 there


def test_empty_radius_counts_as_zero_precision():
    q = codes_from_bits([[0] * 8])
    db = codes_from_bits([[1] * 8])
    m = retrieval_metrics(q, [0], db, [0])
    assert m["precision_r2"] == 0.0 and m["empty_r2"] == 1.0


def test_multi_label_relevance_is_a_shared_label():
    q = codes_from_bits([[0] * 8])
    db = codes_from_bits([[0] * 8, [1] + [0] * 7])
    m = retrieval_metrics(q, [[1, 1, 0]], db, [[0, 0, 1], [0, 1, 0]])
    assert m["map"] == pytest.approx(0.5)


@st.composite
def retrieval_case(draw):
    nbits = draw(st.sampled_from([8, 16, 72]))
    nq = draw(st.integers(1, 6))
    n = draw(st.integers(1, 30))
    # Few distinct codes, so distances tie a lot.
    palette = draw(st.lists(st.lists(st.integers(0, 1), min_size=nbits, max_size=nbits), min_size=1, max_size=4))
    qi = draw(st.lists(st.integers(0, len(palette) - 1), min_size=nq, max_size=nq))
    di = draw(st.lists(st.integers(0, len(palette) - 1), min_size=n, max_size=n))
    ql = draw(st.lists(st.integers(0, 2), min_size=nq, max_size=nq))
    dl = draw(st.lists(st.integers(0, 2), min_size=n, max_size=n))
    flips = draw(st.lists(st.integers(0, nbits - 1), max_size=n))
    bits_db = np.array([palette[i] for i in di], dtype=np.uint8)
    for j, f in enumerate(flips):
        bits_db[j, f] ^= 1
    return (pack(np.array([palette[i] for i in qi], dtype=np.uint8)), np.array(ql), pack(bits_db), np.array(dl),
            draw(st.integers(1, 7)))


@given(retrieval_case())
def test_matches_naive_twin(case):
    q, ql, db, dl, block = case
    got = retrieval_metrics(q, ql, db, dl, topk=(1, 5, 100), map_at=(3, 1000), block=block)
    want = naive.retrieval_metrics(q, ql, db, dl, topk=(1, 5, 100), map_at=(3, 1000))
    for key in ("map", "map@3", "map@1000", "precision@1", "precision@5", "precision@100", "precision_r2", "empty_r2",
                "queries_without_relevant"):
        assert got[key] == pytest.approx(want[key], abs=1e-12), key
    assert got["pr_curve"]["precision"] == pytest.approx(want["pr_precision"], abs=1e-12)
    assert got["pr_curve"]["recall"] == pytest.approx(want["pr_recall"], abs=1e-12)


@given(retrieval_case())
def test_hamming_distances_match_naive(case):
    q, _, db, _, _ = case
    assert np.array_equal(hamming_distances(q, db), naive.hamming_matrix(q, db))


def test_bad_inputs_are_refused():
    q = codes_from_bits([[0] * 8])
    with pytest.raises(CodeError):
        retrieval_metrics(q, [0], np.zeros((2, 2), np.uint8), [0, 1])
    with pytest.raises(ArgumentError, match="3 rows"):
        retrieval_metrics(q, [0], codes_from_bits([[0] * 8] * 3), [0, 1])
    with pytest.raises(ArgumentError, match="positive"):
        retrieval_metrics(q, [0], q, [0], topk=(0,))
