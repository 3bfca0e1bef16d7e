import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import given, strategies as st

import naive
from hashtool.baselines import BASELINES, fit_baseline, is_baseline_file, load_baseline
from hashtool.codes import unpack
from hashtool.errors import ArgumentError, ModelError


def clustered(n=300, d=20, k=4, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 3, (k, d))
    labels = rng.integers(0, k, n)
    return (centers[labels] + rng.normal(0, 1, (n, d))).astype(np.float32), labels


@pytest.mark.parametrize("method", BASELINES)
def test_codes_match_the_linear_rule_and_round_trip(tmp_path, method):
    x, _ = clustered()
    h = fit_baseline(method, x, 16, seed=1)
    codes = h.transform(x)
    assert codes.shape == (300, 2) and codes.dtype == np.uint8
    assert np.array_equal(unpack(codes, 16), naive.linear_hash_bits(x, h.mean, h.W))
    h.save(tmp_path / "m.npz")
    assert is_baseline_file(tmp_path / "m.npz")
    back = load_baseline(tmp_path / "m.npz")
    assert back.method == method and np.array_equal(back.transform(x), codes)
    assert np.array_equal(fit_baseline(method, x, 16, seed=1).transform(x), codes)  # seeded


@given(st.integers(0, 1000))
def test_itq_rotation_lowers_quantisation_loss(seed):
    x, _ = clustered(seed=seed % 7)
    itq = fit_baseline("itq", x, 8, seed=seed)
    pca = fit_baseline("pcah", x, 8)
    # W = P R with R orthogonal: same projection subspace as PCA, orthonormal columns.
    assert np.allclose(itq.W.T @ itq.W, np.eye(8), atol=1e-4)
    assert np.allclose(pca.W @ pca.W.T @ itq.W, itq.W, atol=1e-4)

    def qloss(h):
        v = h.project(x)
        return float(np.square(np.where(v >= 0, 1.0, -1.0) - v).sum())

    assert qloss(itq) <= qloss(pca) + 1e-3


def test_itq_beats_lsh_on_clustered_data():
    from hashtool.evaluate import retrieval_metrics

    x, y = clustered(n=600, d=64, k=6)
    res = {}
    for m in ("lsh", "itq"):
        h = fit_baseline(m, x, 16)
        c = h.transform(x)
        res[m] = retrieval_metrics(c[:100], y[:100], c[100:], y[100:])["map"]
    assert res["itq"] > res["lsh"]


def test_bad_arguments_and_files(tmp_path):
    x, _ = clustered()
    with pytest.raises(ArgumentError, match="unknown baseline"):
        fit_baseline("sh", x, 16)
    with pytest.raises(ArgumentError, match="bits <= min"):
        fit_baseline("itq", x, 32)
    assert fit_baseline("lsh", x, 32).bits == 32  # LSH has no PCA limit
    with pytest.raises(ArgumentError, match="NaN"):
        fit_baseline("itq", np.full((5, 3), np.nan), 8)
    h = fit_baseline("itq", x, 8)
    with pytest.raises(ArgumentError, match="fitted on 20"):
        h.transform(x[:, :5])
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(ModelError, match="not a readable"):
        load_baseline(tmp_path / "junk.npz")
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(ModelError, match="not a hashtool baseline"):
        load_baseline(tmp_path / "other.npz")
    np.savez(tmp_path / "future.npz", format=np.array("hashtool-baseline"), version=np.array(9))
    with pytest.raises(ModelError, match="version 9"):
        load_baseline(tmp_path / "future.npz")
    with pytest.raises(ModelError, match="no such"):
        load_baseline(tmp_path / "missing.npz")


def test_baselines_run_without_torch(tmp_path):
    code = textwrap.dedent(
        f"""
        import json, sys
        import numpy as np
        from hashtool.baselines import fit_baseline, load_baseline
        from hashtool.evaluate import retrieval_metrics
        x = np.random.default_rng(0).normal(size=(200, 30)).astype(np.float32)
        h = fit_baseline("itq", x, 16)
        h.save({str(tmp_path / 'm.npz')!r})
        c = load_baseline({str(tmp_path / 'm.npz')!r}).transform(x)
        retrieval_metrics(c[:10], np.zeros(10, int), c[10:], np.zeros(190, int))
        print(json.dumps({{"torch": "torch" in sys.modules}}))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"torch": False}
