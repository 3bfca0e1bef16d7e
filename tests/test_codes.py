import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from hashtool import codes
from hashtool.errors import CodeError

from naive import pack_bits, unpack_bits

nbits_st = st.integers(1, 64).map(lambda k: 8 * k)  # 8..512


@st.composite
def bit_arrays(draw, nbits=None):
    nbits = nbits or draw(nbits_st)
    n = draw(st.integers(1, 20))
    return draw(hnp.arrays(np.uint8, (n, nbits), elements=st.integers(0, 1)))


@given(bit_arrays())
def test_pack_matches_naive_and_numpy_little_endian(bits):
    packed = codes.pack(bits)
    assert packed.dtype == np.uint8 and packed.shape == (bits.shape[0], bits.shape[1] // 8)
    np.testing.assert_array_equal(packed, pack_bits(bits))
    np.testing.assert_array_equal(np.unpackbits(packed, axis=1, bitorder="little"), bits)


@given(bit_arrays())
def test_unpack_round_trip_and_naive(bits):
    packed = codes.pack(bits)
    np.testing.assert_array_equal(codes.unpack(packed, bits.shape[1]), bits)
    np.testing.assert_array_equal(codes.unpack(packed), unpack_bits(packed, bits.shape[1]))


def test_hand_written_bytes():
    # bit 0 is the least significant bit of byte 0
    bits = np.zeros((3, 16), dtype=np.uint8)
    bits[0, 0] = 1          # byte 0 = 0x01
    bits[1, 7] = 1          # byte 0 = 0x80
    bits[2, [1, 8, 15]] = 1  # byte 0 = 0x02, byte 1 = 0x81
    packed = codes.pack(bits)
    assert packed.tolist() == [[0x01, 0x00], [0x80, 0x00], [0x02, 0x81]]
    assert codes.to_hex(packed) == ["0100", "8000", "0281"]


@given(bit_arrays())
def test_equivalent_input_forms(bits):
    ref = codes.pack(bits)
    np.testing.assert_array_equal(codes.pack(bits.astype(bool)), ref)
    np.testing.assert_array_equal(codes.pack(bits.astype(np.int64) * 2 - 1), ref)  # {-1, +1}
    real = np.where(bits == 1, 0.7, -0.3).astype(np.float32)
    np.testing.assert_array_equal(codes.pack(real), ref)


def test_sign_rule_maps_zero_to_one():
    x = np.array([[0.0, -0.0, -1e-30, 1e-30, -2, 3, 0, 0]], dtype=np.float64)
    # -0.0 >= 0 is True in IEEE arithmetic: both zeros are bit 1
    assert codes.unpack(codes.pack(x)).tolist() == [[1, 1, 0, 1, 0, 1, 1, 1]]


@given(bit_arrays())
def test_hex_round_trip(bits):
    packed = codes.pack(bits)
    np.testing.assert_array_equal(codes.from_hex(codes.to_hex(packed), bits.shape[1]), packed)


@given(bit_arrays())
def test_words_round_trip_and_bit_positions(bits):
    packed = codes.pack(bits)
    nbits = bits.shape[1]
    words = codes.to_words(packed)
    assert words.dtype == np.uint64 and words.shape == (len(bits), (nbits + 63) // 64)
    for i in range(len(bits)):
        for j in range(nbits):
            assert (int(words[i, j // 64]) >> (j % 64)) & 1 == bits[i, j]
    np.testing.assert_array_equal(codes.from_words(words, nbits), packed)


@settings(max_examples=50)
@given(bit_arrays(), bit_arrays())
def test_hamming_matches_bit_count(a, b):
    m = min(len(a), len(b))
    a, b = a[:m], b[:m]
    if a.shape[1] != b.shape[1]:
        with pytest.raises(CodeError):
            codes.hamming(codes.pack(a), codes.pack(b))
        return
    assert codes.hamming(codes.pack(a), codes.pack(b)).tolist() == (a != b).sum(axis=1).tolist()


@pytest.mark.parametrize(
    "bad, fragment",
    [
        (np.zeros((2, 12), dtype=np.uint8), "multiple of 8"),
        (np.zeros((2, 4104), dtype=np.uint8), "multiple of 8 between"),
        (np.zeros((0, 16), dtype=np.uint8), "empty"),
        (np.zeros((2, 0), dtype=np.uint8), "zero width"),
        (np.zeros(16, dtype=np.uint8), "1-D"),
        (np.array([[0.0, np.nan] * 4]), "NaN"),
        (np.array([[-1, 0, 1, 1, 0, 0, 1, 1]]), "{-1, +1}"),
        (np.array([[2, 0, 1, 1, 0, 0, 1, 1]]), "{0, 1}"),
        (np.array([["a"] * 8]), "dtype"),
    ],
)
def test_pack_rejects_bad_input(bad, fragment):
    with pytest.raises(CodeError) as info:
        codes.pack(bad)
    assert fragment in str(info.value)


def test_check_packed_errors():
    with pytest.raises(CodeError, match="uint8"):
        codes.check_packed(np.zeros((2, 8), dtype=np.int32))
    with pytest.raises(CodeError, match="expected"):
        codes.check_packed(np.zeros((2, 8), dtype=np.uint8), nbits=128)
    with pytest.raises(CodeError, match="not valid hexadecimal"):
        codes.from_hex(["zz"])
    with pytest.raises(CodeError, match="different lengths"):
        codes.from_hex(["00", "0000"])


def test_ensure_packed_accepts_packed_and_bits():
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 2, (5, 64)).astype(np.uint8)
    packed = codes.pack(bits)
    np.testing.assert_array_equal(codes.ensure_packed(packed, 64), packed)
    np.testing.assert_array_equal(codes.ensure_packed(bits, 64), packed)
    with pytest.raises(CodeError, match="fit neither"):
        codes.ensure_packed(bits[:, :32], 64)


def test_nbits_bounds():
    assert codes.check_nbits(8) == 8 and codes.check_nbits(4096) == 4096
    for bad in (0, 4, 9, 4104, -8, True, 8.0):
        with pytest.raises(CodeError):
            codes.check_nbits(bad)


@given(st.lists(st.floats(-2, 2, allow_nan=False), min_size=1, max_size=40), st.sampled_from(["sign", "sigmoid"]))
def test_one_binarisation_rule_in_numpy_torch_and_the_encoder_twin(values, rule):
    """codes.binarize, train.models.binarize and the literal definition agree, at the threshold too."""
    from hashtool.codes import binarize, rule_threshold

    values = np.array(values + [0.0, 0.5], dtype=np.float32)
    want = np.array([(v >= 0) if rule == "sign" else (v > 0.5) for v in values], dtype=np.uint8)
    assert np.array_equal(binarize(values, rule), want)
    assert rule_threshold("sign") == (0.0, True) and binarize(np.zeros(1), "sign")[0] == 1
    try:
        import torch

        from hashtool.train.models import binarize as torch_binarize
    except ImportError:
        return
    assert np.array_equal(torch_binarize(torch.from_numpy(values), rule).numpy(), want)
