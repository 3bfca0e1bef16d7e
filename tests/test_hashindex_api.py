"""The index interface: shapes, padding, validation errors, ids, threads, warmup, torch-free runtime."""

import os
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")

from hashtool.errors import ArgumentError, CodeError
from hashtool.hashindex import FlatIndex, MIHIndex, warmup
from hashtool.hashindex.mih import default_m, substring_layout

BOTH = [FlatIndex, MIHIndex]


@pytest.mark.parametrize("cls", BOTH)
def test_empty_index_and_empty_queries(cls):
    index = cls(64)
    q = np.zeros((2, 8), np.uint8)
    d, i = index.search(q, 3)
    assert d.shape == (2, 3) and (d == -1).all() and (i == -1).all()
    lims, rd, ri = index.range_search(q, 64)
    assert lims.tolist() == [0, 0, 0] and rd.shape == (0,) and ri.shape == (0,)
    index.add(np.ones((5, 8), np.uint8))
    d, i = index.search(np.zeros((0, 8), np.uint8), 4)
    assert d.shape == (0, 4) and d.dtype == np.int32 and i.shape == (0, 4) and i.dtype == np.int64
    lims, rd, ri = index.range_search(np.zeros((0, 8), np.uint8), 3)
    assert lims.tolist() == [0] and rd.shape == (0,)
    d, i = index.search(np.ones((1, 8), np.uint8), 7)  # fewer than k stored: -1 padding
    assert d.tolist() == [[0, 0, 0, 0, 0, -1, -1]] and i.tolist() == [[0, 1, 2, 3, 4, -1, -1]]


@pytest.mark.parametrize("cls", BOTH)
def test_accepts_bits_and_signs(cls):
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 2, size=(10, 16))
    a, b = cls(16), cls(16)
    a.add(bits)
    b.add(np.packbits(bits, axis=1, bitorder="little").astype(np.uint8))
    np.testing.assert_array_equal(a.codes(), b.codes())
    d, i = a.search(np.where(bits[:2] > 0, 1.0, -1.0), 1)  # real values by sign
    assert d[:, 0].tolist() == [0, 0]


@pytest.mark.parametrize("cls", BOTH)
def test_validation_errors_name_the_problem(cls):
    index = cls(64)
    index.add(np.zeros((3, 8), np.uint8))
    with pytest.raises(CodeError, match="1-D"):
        index.search(np.zeros(8, np.uint8), 1)
    with pytest.raises(CodeError, match="fit neither"):
        index.search(np.zeros((1, 4), np.uint8), 1)
    with pytest.raises(ArgumentError, match="k must be >= 1"):
        index.search(np.zeros((1, 8), np.uint8), 0)
    with pytest.raises(ArgumentError, match="k must be an integer"):
        index.search(np.zeros((1, 8), np.uint8), 2.5)
    with pytest.raises(ArgumentError, match="max_distance must be >= 0"):
        index.range_search(np.zeros((1, 8), np.uint8), -1)
    with pytest.raises(ArgumentError, match="already in the index"):
        index.add(np.zeros((1, 8), np.uint8), ids=[1])
    with pytest.raises(ArgumentError, match="duplicates"):
        index.add(np.zeros((2, 8), np.uint8), ids=[7, 7])
    with pytest.raises(ArgumentError, match="one id per code"):
        index.add(np.zeros((2, 8), np.uint8), ids=[7])
    with pytest.raises(ArgumentError, match=">= 0"):
        index.add(np.zeros((1, 8), np.uint8), ids=[-1])
    with pytest.raises(ArgumentError, match="not in the index"):
        index.remove([0, 99])
    assert len(index) == 3  # nothing removed
    assert index.remove([0, 99], missing="ignore") == 1
    assert index.remove([1, 1, 1]) == 1
    assert index.ids.tolist() == [2]
    with pytest.raises(ValueError):
        index.ids[0] = 5  # read-only view
    with pytest.raises(ArgumentError, match="threads"):
        index.threads = -2


def test_ids_default_continue_after_largest_and_order_by_id():
    index = FlatIndex(8)
    index.add(np.array([[1], [1]], np.uint8), ids=[50, 10])
    index.add(np.array([[1]], np.uint8))
    assert index.ids.tolist() == [10, 50, 51]
    d, i = index.search(np.array([[1]], np.uint8), 3)
    assert i.tolist() == [[10, 50, 51]]  # ties ordered by id, whatever the insertion order


def test_threads_follow_the_shared_setting(monkeypatch):
    monkeypatch.setenv("HASHTOOL_THREADS", "3")
    assert FlatIndex(8).threads == 3
    assert MIHIndex(8, threads=1).threads == 1
    index = FlatIndex(8)
    index.threads = None
    assert index.threads == 3


def test_mih_parameters():
    assert default_m(64, 10**7) == 3 and default_m(64, 10**6) == 3 and default_m(256, 10**6) == 13
    assert default_m(8, 2) == 1 and default_m(1024, 4) == 64
    starts, widths = substring_layout(70, 3)
    assert widths.tolist() == [24, 23, 23] and starts.tolist() == [0, 24, 47]
    with pytest.raises(ArgumentError, match="between 2 and 64"):
        MIHIndex(64, m=1)
    with pytest.raises(ArgumentError, match="m must be"):
        MIHIndex(64, m=0)
    index = MIHIndex(64, m=4)
    assert index.m == 4 and "m=4" in repr(index)


def test_warmup_reports_its_time():
    t = warmup()
    assert set(t) == {"import", "flat", "mih", "total"} and t["total"] >= 0
    assert t["total"] == t["import"] + t["flat"] + t["mih"]
    import sys

    # warmup leaves the kernels loaded
    assert all(m in sys.modules for m in ("hashtool.hashindex._flat_kernels", "hashtool.hashindex._mih_kernels"))


def test_runtime_path_is_torch_free():
    code = textwrap.dedent(
        """
        import json, sys
        import numpy as np
        from hashtool.hashindex import FlatIndex, MIHIndex, load_index
        idx = MIHIndex(64)
        idx.add(np.random.default_rng(0).integers(0, 256, size=(100, 8), dtype=np.uint8))
        idx.search(np.zeros((1, 8), np.uint8), 3)
        print(json.dumps({"loaded": [m for m in ("torch", "onnx", "faiss") if m in sys.modules]}))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1])["loaded"] == []


def test_popcount_is_the_llvm_intrinsic():
    """The kernels count bits with LLVM's ctpop (popcnt / vectorised), not a table or a Python loop."""
    import os

    if os.environ.get("NUMBA_DISABLE_JIT") == "1":
        pytest.skip("JIT disabled")
    from numba import njit

    from hashtool.hashindex import _flat_kernels as K
    from hashtool.hashindex._popcount import popcount

    words = np.arange(64, dtype=np.uint64)
    out = np.empty(64, np.int32)
    K.block_distances(words, 1, 0, 64, words[:1], 0, out)
    assert out.tolist() == [bin(i).count("1") for i in range(64)]

    @njit  # a fresh compilation (the kernels may come from the cache, which keeps no IR)
    def total(x, a):
        s = 0
        for v in x:
            s += popcount(v ^ a)
        return s

    assert total(words, np.uint64(2**64 - 1)) == sum(64 - bin(i).count("1") for i in range(64))
    llvm = "".join(total.inspect_llvm().values())
    asm = "".join(total.inspect_asm().values())
    assert "llvm.ctpop" in llvm
    assert "popcnt" in asm or "vpshufb" in asm


@pytest.mark.skipif(os.environ.get("NUMBA_DISABLE_JIT") == "1", reason="compiles kernels")
def test_every_kernel_compiles_once(tmp_path):
    """No literal-argument respecialisations: warmup compiles one version of every kernel (empty cache)."""
    code = textwrap.dedent(
        """
        import json
        from hashtool.hashindex import warmup, _flat_kernels as FK, _mih_kernels as MK
        from numba.core.registry import CPUDispatcher
        warmup(64)
        warmup(256)
        out = {}
        for mod in (FK, MK):
            for name, obj in vars(mod).items():
                if isinstance(obj, CPUDispatcher):
                    out[mod.__name__ + "." + name] = len(obj.signatures)
        print(json.dumps(out))
        """
    )
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode == 0, res.stderr
    counts = json.loads(res.stdout.strip().splitlines()[-1])
    assert counts["hashtool.hashindex._mih_kernels._mih_query"] == 1
    assert {name: c for name, c in counts.items() if c > 1} == {}
