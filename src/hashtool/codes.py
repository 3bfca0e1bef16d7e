"""The one definition of a hash code in hashtool (numpy only).

A code of ``nbits`` bits is stored packed, ``nbits // 8`` bytes per code, as ``uint8`` arrays of shape
``(n, nbits // 8)``. Within each byte the bits are little-endian: bit ``j`` of a code is bit ``j % 8``
(value ``1 << (j % 8)``) of byte ``j // 8``. That is ``np.packbits(bits, axis=1, bitorder="little")``,
the convention of faiss's binary indexes, so faiss can serve as an oracle.

``nbits`` is any multiple of 8 from 8 to 4096.

Binarisation rule (used everywhere a real value becomes a bit): bit = 1 if value >= 0 else 0. Zero maps
to bit 1 on purpose: ``sign(0)`` is 0 and would otherwise be neither bit.
"""

from __future__ import annotations

import numpy as np

from hashtool.errors import CodeError

MIN_BITS = 8
MAX_BITS = 4096
BIT_ORDER = "little"

# The one binarisation rule of the real-valued hash layers, by name: (threshold, whether a value equal to the
# threshold is bit 1). "sign": value >= 0 is 1, so 0 is 1; "sigmoid": value > 0.5 is 1. Training (torch),
# export (the ONNX graph) and the runtime encoder all read this table, through binarize() or rule_threshold().
BINARIZE_RULES = {"sign": (0.0, True), "sigmoid": (0.5, False)}


def rule_threshold(rule: str) -> tuple[float, bool]:
    """``(threshold, inclusive)`` of a binarisation rule (see :data:`BINARIZE_RULES`)."""
    if rule not in BINARIZE_RULES:
        raise CodeError(f"unknown binarize rule {rule!r}; expected one of {sorted(BINARIZE_RULES)}")
    return BINARIZE_RULES[rule]


def binarize(values, rule: str) -> np.ndarray:
    """uint8 {0, 1} bits of a real-valued array under ``rule`` (numpy; the torch twin is in train.models)."""
    threshold, inclusive = rule_threshold(rule)
    values = np.asarray(values)
    return ((values >= threshold) if inclusive else (values > threshold)).astype(np.uint8)


def check_nbits(nbits) -> int:
    """Validate a code length and return it as an int."""
    if isinstance(nbits, bool) or not isinstance(nbits, (int, np.integer)):
        raise CodeError(f"nbits must be an integer, got {type(nbits).__name__}")
    nbits = int(nbits)
    if nbits < MIN_BITS or nbits > MAX_BITS or nbits % 8:
        raise CodeError(f"nbits must be a multiple of 8 between {MIN_BITS} and {MAX_BITS}, got {nbits}")
    return nbits


def _as_2d(arr, what: str) -> np.ndarray:
    try:
        arr = np.asarray(arr)
    except (TypeError, ValueError) as exc:
        raise CodeError(f"{what} cannot be converted to an array: {exc}") from None
    if arr.dtype == object:
        raise CodeError(f"{what} must be a numeric array, got dtype object (ragged rows?)")
    if arr.ndim == 1:
        raise CodeError(f"{what} must be 2-D (n, width); got a 1-D array of length {arr.shape[0]}: use arr[None, :] for one code")
    if arr.ndim != 2:
        raise CodeError(f"{what} must be 2-D (n, width), got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise CodeError(f"{what} is empty: no codes (shape {arr.shape})")
    if arr.shape[1] == 0:
        raise CodeError(f"{what} has zero width (shape {arr.shape})")
    return arr


def to_bits(values) -> np.ndarray:
    """Map an (n, B) array of bools, {0,1} or {-1,+1} integers, or real numbers to uint8 {0,1} bits.

    * bool: True is 1.
    * integers: every value in {0, 1} (taken as bits) or every value in {-1, +1} (+1 is bit 1). A mix
      such as {-1, 0, 1} is ambiguous and rejected.
    * floats: the sign rule, ``value >= 0`` is bit 1 (so 0.0 is bit 1). A float array of 0.0/1.0 is
      therefore all ones: cast it to ``bool`` or an integer type first. NaN is rejected.
    """
    arr = _as_2d(values, "bits")
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8)
    if np.issubdtype(arr.dtype, np.integer):
        lo, hi = int(arr.min()), int(arr.max())
        if lo >= 0 and hi <= 1:
            return arr.astype(np.uint8)
        if lo >= -1 and hi <= 1 and not (arr == 0).any():
            return (arr > 0).astype(np.uint8)
        raise CodeError(
            f"integer bits must all be in {{0, 1}} or all in {{-1, +1}}; found values from {lo} to {hi}"
        )
    if np.issubdtype(arr.dtype, np.floating):
        if np.isnan(arr).any():
            raise CodeError(f"bits contain NaN (first at row {int(np.isnan(arr).any(axis=1).argmax())})")
        return (arr >= 0).astype(np.uint8)
    raise CodeError(f"bits must be bool, integer or float, got dtype {arr.dtype}")


def pack(values) -> np.ndarray:
    """Pack (n, B) bits (see :func:`to_bits` for the accepted forms) into uint8 codes (n, B // 8)."""
    bits = to_bits(values)
    check_nbits(bits.shape[1])
    return np.packbits(bits, axis=1, bitorder=BIT_ORDER)


def unpack(packed, nbits: int | None = None) -> np.ndarray:
    """Unpack uint8 codes (n, nbits // 8) into uint8 {0, 1} bits (n, nbits)."""
    packed = check_packed(packed, nbits)
    return np.unpackbits(packed, axis=1, bitorder=BIT_ORDER)


def check_packed(packed, nbits: int | None = None) -> np.ndarray:
    """Validate packed codes and return them as a C-contiguous uint8 (n, nbits // 8) array."""
    arr = _as_2d(packed, "packed codes")
    if arr.dtype != np.uint8:
        raise CodeError(f"packed codes must have dtype uint8, got {arr.dtype}; use hashtool.codes.pack() on bits")
    width_bits = arr.shape[1] * 8
    if nbits is not None:
        nbits = check_nbits(nbits)
        if width_bits != nbits:
            raise CodeError(
                f"packed codes are {arr.shape[1]} bytes wide ({width_bits} bits) but {nbits} bits "
                f"({nbits // 8} bytes) were expected"
            )
    else:
        check_nbits(width_bits)
    return np.ascontiguousarray(arr)


def ensure_packed(codes, nbits: int) -> np.ndarray:
    """Accept packed uint8 codes (n, nbits // 8) or anything :func:`pack` takes with width ``nbits``.

    A uint8 array is taken as packed when its width is ``nbits // 8``, as bits when it is ``nbits``.
    """
    nbits = check_nbits(nbits)
    arr = _as_2d(codes, "codes")
    if arr.dtype == np.uint8 and arr.shape[1] == nbits // 8:
        return check_packed(arr, nbits)
    if arr.shape[1] == nbits:
        return pack(arr)
    raise CodeError(
        f"codes of shape {arr.shape} and dtype {arr.dtype} fit neither packed {nbits}-bit codes "
        f"(uint8, width {nbits // 8}) nor unpacked bits (width {nbits})"
    )


def words_per_code(nbits: int) -> int:
    """Number of uint64 words that hold one code, zero-padded."""
    return (check_nbits(nbits) + 63) // 64


def to_words(packed, nbits: int | None = None) -> np.ndarray:
    """Convert packed codes to uint64 words (n, ceil(nbits / 64)), little-endian, zero-padded.

    Byte ``b`` of a code lands in word ``b // 8`` at bits ``8 * (b % 8)`` and up, so bit ``j`` of the
    code is bit ``j % 64`` of word ``j // 64`` on every platform.
    """
    packed = check_packed(packed, nbits)
    n, nbytes = packed.shape
    nwords = (nbytes + 7) // 8
    buf = np.zeros((n, nwords * 8), dtype=np.uint8)
    buf[:, :nbytes] = packed
    return buf.view("<u8").astype(np.uint64, copy=False).reshape(n, nwords)


def from_words(words, nbits: int) -> np.ndarray:
    """Inverse of :func:`to_words`."""
    nbits = check_nbits(nbits)
    words = np.ascontiguousarray(np.asarray(words, dtype=np.uint64))
    if words.ndim != 2 or words.shape[1] != words_per_code(nbits):
        raise CodeError(f"words must have shape (n, {words_per_code(nbits)}) for {nbits} bits, got {words.shape}")
    return np.ascontiguousarray(words.astype("<u8").view(np.uint8)[:, : nbits // 8])


def to_hex(packed, nbits: int | None = None) -> list[str]:
    """One lowercase hex string per code, bytes in storage order (byte 0 first)."""
    packed = check_packed(packed, nbits)
    return [row.tobytes().hex() for row in packed]


def from_hex(strings, nbits: int | None = None) -> np.ndarray:
    """Parse hex strings from :func:`to_hex` back to packed codes."""
    if isinstance(strings, str):
        raise CodeError("from_hex takes a sequence of hex strings; wrap a single string in a list")
    strings = list(strings)
    if not strings:
        raise CodeError("from_hex got no strings")
    rows = []
    for i, s in enumerate(strings):
        if not isinstance(s, str):
            raise CodeError(f"hex code {i} is {type(s).__name__}, not str")
        try:
            rows.append(bytes.fromhex(s))
        except ValueError:
            raise CodeError(f"hex code {i} ({s[:40]!r}) is not valid hexadecimal") from None
    widths = {len(r) for r in rows}
    if len(widths) != 1:
        raise CodeError(f"hex codes have different lengths: {sorted(w * 2 for w in widths)} hex digits")
    packed = np.frombuffer(b"".join(rows), dtype=np.uint8).reshape(len(rows), -1).copy()
    return check_packed(packed, nbits)


def hamming(a, b) -> np.ndarray:
    """Hamming distances between packed codes a (n, w) and b (n, w) row by row, or one against many.

    A reference helper for small arrays (uses ``np.unpackbits``); the index has the fast kernels.
    """
    a = check_packed(a)
    b = check_packed(b)
    if a.shape[1] != b.shape[1]:
        raise CodeError(f"codes of different widths: {a.shape[1] * 8} and {b.shape[1] * 8} bits")
    return np.unpackbits(a ^ b, axis=1).sum(axis=1, dtype=np.int32)
