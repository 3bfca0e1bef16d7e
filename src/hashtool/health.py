"""Code health: do an encoder's codes tell images apart? (numpy only)

An encoder trained to separate classes maps every picture of a class to (nearly) one code. On its own
dataset that is what retrieval wants; on a folder of photos from elsewhere it means unrelated photos
share codes, and ``dups`` groups them. :func:`code_health` measures, from packed codes alone:

* the share of ones of each bit (min / median / max): a bit that is always 0 or always 1 carries nothing;
* the mean absolute correlation between pairs of bits (Pearson, over bits that vary): redundant bits;
* the number of distinct codes and the largest group of images that share one code;
* the share of images covered by the :data:`TOP` most common codes,

and writes plain warnings when the codes collapse (:data:`COLLAPSE_SHARE` of the images in the
:data:`TOP` most common codes) or bits are (nearly) constant. Nothing is judged below :data:`MIN_IMAGES`
images. The correlation is computed on at most :data:`CORR_SAMPLE` codes (a seeded sample).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

TOP = 10
COLLAPSE_SHARE = 0.5
CONSTANT_SHARE = 0.01  # a bit whose ones (or zeros) are rarer than this is "nearly constant"
MIN_IMAGES = 20
CORR_SAMPLE = 200_000


@dataclass
class CodeHealth:
    images: int
    bits: int
    ones_min: float
    ones_median: float
    ones_max: float
    mean_abs_correlation: float | None  # None when fewer than two bits vary
    distinct_codes: int
    largest_group: int  # images sharing the most common code
    top_codes_share: float  # share of images whose code is one of the TOP most common
    constant_bits: int
    correlation_sample: int
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "CodeHealth":
        """The inverse of :meth:`as_dict` (the build stores the health of every generation in its catalog)."""
        return cls(**d)

    def lines(self) -> list[str]:
        """Human-readable summary (one line) and the warnings."""
        if self.images == 0:
            return ["no codes"]
        corr = "n/a" if self.mean_abs_correlation is None else f"{self.mean_abs_correlation:.3f}"
        top = min(TOP, self.distinct_codes)
        out = [
            f"ones per bit min {self.ones_min:.2f} / median {self.ones_median:.2f} / max {self.ones_max:.2f}; "
            f"mean |correlation| between bits {corr}; {self.distinct_codes} distinct codes for {self.images} images; "
            f"largest group sharing one code: {self.largest_group} ({self.largest_group / self.images:.0%}); "
            f"{self.top_codes_share:.0%} of images in the {top} most common codes"
        ]
        return out + [f"WARNING: {w}" for w in self.warnings]


def _code_counts(codes: np.ndarray) -> np.ndarray:
    """How many times each distinct code occurs: runs of a lexicographic sort over the uint64 words (about 4x
    faster than ``np.unique(codes, axis=0)`` at 1e6 x 128 bits)."""
    from hashtool.codes import to_words

    words = to_words(codes)
    ordered = words[np.lexsort(words.T[::-1])]
    starts = np.flatnonzero(np.r_[True, (ordered[1:] != ordered[:-1]).any(axis=1)])
    return np.diff(np.r_[starts, len(ordered)])


def code_health(codes, nbits: int | None = None) -> CodeHealth:
    """Health of packed codes ``codes`` (uint8 (n, nbits/8), hashtool's bit order); see the module docstring."""
    codes = np.ascontiguousarray(codes, dtype=np.uint8)
    if codes.ndim != 2:
        raise ValueError(f"codes must be (n, nbytes), got shape {codes.shape}")
    n, nbytes = codes.shape
    nbits = nbytes * 8 if nbits is None else int(nbits)
    if n == 0:
        return CodeHealth(0, nbits, 0.0, 0.0, 0.0, None, 0, 0, 0.0, 0, 0)
    ones = np.zeros(nbits, dtype=np.int64)
    for start in range(0, n, 65536):
        ones += np.unpackbits(codes[start : start + 65536], axis=1, bitorder="little")[:, :nbits].sum(axis=0, dtype=np.int64)
    share = ones / n
    counts = np.sort(_code_counts(codes))[::-1]
    sample = codes if n <= CORR_SAMPLE else codes[np.sort(np.random.default_rng(0).choice(n, CORR_SAMPLE, replace=False))]
    corr = _mean_abs_correlation(np.unpackbits(sample, axis=1, bitorder="little")[:, :nbits])
    constant = int(((share < CONSTANT_SHARE) | (share > 1 - CONSTANT_SHARE)).sum())
    health = CodeHealth(
        images=n, bits=nbits, ones_min=float(share.min()), ones_median=float(np.median(share)), ones_max=float(share.max()),
        mean_abs_correlation=corr, distinct_codes=len(counts), largest_group=int(counts[0]),
        top_codes_share=float(counts[:TOP].sum() / n), constant_bits=constant, correlation_sample=len(sample),
    )
    health.warnings = _warnings(health)
    return health


def _mean_abs_correlation(bits: np.ndarray) -> float | None:
    """Mean |Pearson correlation| over pairs of distinct bits that vary in ``bits`` (0/1 (n, B))."""
    x = bits.astype(np.float64)
    varying = x.std(axis=0) > 0
    x = x[:, varying]
    b = x.shape[1]
    if b < 2:
        return None
    c = np.corrcoef(x, rowvar=False)
    return float(np.abs(c[~np.eye(b, dtype=bool)]).mean())


def _warnings(h: CodeHealth) -> list[str]:
    if h.images < MIN_IMAGES:
        return []
    out = []
    top = min(TOP, h.distinct_codes)
    if h.top_codes_share >= COLLAPSE_SHARE and h.distinct_codes < h.images:
        out.append(
            f"{h.top_codes_share:.0%} of images share {top} code(s): this encoder separates classes, not images; "
            "dups will group unrelated photos (train an encoder on pictures like these, see the README)"
        )
    if h.constant_bits:
        out.append(f"{h.constant_bits} of {h.bits} bits are (nearly) constant (ones below {CONSTANT_SHARE:.0%} or above "
                   f"{1 - CONSTANT_SHARE:.0%}): they carry no information")
    return out
