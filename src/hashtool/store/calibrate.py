"""The duplicate radius of an index, calibrated from edited copies and stored in its catalog (numpy + pillow).

``hashtool calibrate`` answers "which radius finds my edited copies, and what does it cost?":

1. A seeded sample of the indexed images is read from the folder (files changed since the build are
   skipped: their stored code no longer describes them).
2. Each is edited once by every chosen kind of :mod:`hashtool.edits` (the edits the photo encoder trains
   on: resize, JPEG, brightness, crops, mirror, caption, ...), in memory only: nothing is written into the
   user's folder. Each copy is encoded with the index's own encoder and its distance to the original's
   stored code is measured.
3. Seeded random pairs of distinct indexed images stand in for unrelated pairs (true duplicates among
   them count as false pairs, so the false-pair share is, if anything, overstated).
4. For every radius r: recall(r), the share of copies within r of their original, and false(r), the share
   of unrelated pairs within r. The radius stored is the smallest whose recall reaches the target
   (``--recall``), or the code length if none does; ``-r`` stores a chosen radius instead.

The result goes under the catalog meta key :data:`META_KEY`, tied to the encoder's sha256, in a new
generation of the index written like a build's (atomic switch); ``dups`` without ``--max-distance`` uses
it and says so, and without one uses :data:`DEFAULT_RADIUS` and says that.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from hashtool.errors import ArgumentError, IndexFormatError

META_KEY = "calibration"
DEFAULT_RADIUS = 2  # bits; what `dups` uses on an index that was never calibrated


@dataclass
class Calibration:
    radius: int
    recall: float  # share of edited copies within radius
    target_recall: float
    false_pair_rate: float  # share of unrelated pairs within radius
    expected_false_pairs: float  # false_pair_rate x the pairs of distinct images in the index
    images: int  # originals that were edited
    copies: int
    unrelated_pairs: int
    edits: list[str]
    seed: int
    encoder_sha256: str
    created: str
    recall_by_radius: list[float] = field(default_factory=list)  # index r: recall(r)
    false_by_radius: list[float] = field(default_factory=list)  # index r: false(r)
    recall_by_edit: dict[str, float] = field(default_factory=dict)  # at the stored radius
    skipped: list[str] = field(default_factory=list)  # sampled files that could not be used, with why

    def as_dict(self) -> dict:
        return asdict(self)


def dups_radius(meta: dict, encoder_radius: int | None = None) -> tuple[int, str]:
    """(radius, a sentence saying where it comes from) for ``dups`` without --max-distance.

    In order: this index's calibration; the radius the encoder's training measured on its held-out edited
    copies (``encoder_radius``: the encoder's ``copy_radius`` metadata, which the build records in the catalog
    as ``encoder_copy_radius``); :data:`DEFAULT_RADIUS`.
    """
    cal = meta.get(META_KEY)
    if isinstance(cal, dict) and cal.get("encoder_sha256") == meta.get("encoder_sha256") and isinstance(cal.get("radius"), int):
        return cal["radius"], (
            f"using the calibrated radius {cal['radius']} (finds {cal['recall']:.0%} of edited copies, "
            f"{cal['false_pair_rate']:.2%} of unrelated pairs within it; calibrated {cal.get('created', '?')}); "
            "-r/--max-distance overrides it"
        )
    if encoder_radius is not None:
        return int(encoder_radius), (
            f"using the encoder's radius {int(encoder_radius)} (95% of its training's held-out edited copies lie within it; "
            "`hashtool calibrate` measures one for this index); -r/--max-distance overrides it"
        )
    return DEFAULT_RADIUS, (
        f"using the default radius {DEFAULT_RADIUS} (this index has no calibration: `hashtool calibrate` measures one); "
        "-r/--max-distance overrides it"
    )


def copy_distances(encoder, originals, edits, rng, progress=None) -> tuple[dict[str, list[int]], list[str]]:
    """Distances of edited copies to their originals' codes, per edit kind.

    ``originals``: [(path, packed code (nbytes,))]. Returns ({kind: [distance, ...]}, [skipped: reason]).
    """
    from hashtool.edits import apply_edit
    from hashtool.files.images import convert_image, open_image
    from hashtool.errors import ImageError

    out: dict[str, list[int]] = {k: [] for k in edits}
    skipped = []
    for n, (path, code) in enumerate(originals):
        try:
            img = open_image(path)
            try:
                rgb = img.convert("RGB")
            finally:
                img.close()
            arrays = [convert_image(apply_edit(rgb, kind, rng), encoder.preprocess, name=f"{path} ({kind})") for kind in edits]
        except (ImageError, OSError) as exc:
            skipped.append(str(exc))
            continue
        codes = encoder.encode(np.stack(arrays))
        d = np.bitwise_count(codes ^ code[None, :]).sum(axis=1)
        for kind, dist in zip(edits, d.tolist()):
            out[kind].append(int(dist))
        if progress:
            progress(n + 1, len(originals))
    return out, skipped


def unrelated_distances(codes: np.ndarray, pairs: int, rng) -> np.ndarray:
    """Distances of ``pairs`` seeded random pairs of distinct rows of ``codes`` (with replacement)."""
    n = len(codes)
    if n < 2:
        return np.zeros(0, dtype=np.int64)
    a = rng.integers(0, n, pairs)
    b = rng.integers(0, n - 1, pairs)
    b = b + (b >= a)  # uniform over the other rows
    return np.bitwise_count(codes[a] ^ codes[b]).sum(axis=1).astype(np.int64)


def choose_radius(copy_d: np.ndarray, unrelated_d: np.ndarray, nbits: int, target: float) -> tuple[int, list[float], list[float]]:
    """(smallest radius whose recall reaches ``target`` (nbits if none), recall by radius, false share by radius)."""
    radii = np.arange(nbits + 1)
    recall = [(float((copy_d <= r).mean()) if len(copy_d) else 0.0) for r in radii]
    false = [(float((unrelated_d <= r).mean()) if len(unrelated_d) else 0.0) for r in radii]
    reached = [r for r in radii if recall[r] >= target]
    return (int(reached[0]) if reached else nbits), recall, false


def calibrate(gen, encoder, *, sample: int = 200, edits=None, recall: float = 0.95, seed: int = 0,
              pairs: int = 100_000, radius: int | None = None, progress=None) -> Calibration:
    """Measure the calibration of the index generation ``gen`` (see the module docstring); stores nothing."""
    from hashtool.edits import kinds

    if not 0 < recall <= 1:
        raise ArgumentError(f"--recall must be in (0, 1], got {recall}")
    if sample < 1 or pairs < 1:
        raise ArgumentError("--sample and --pairs must be at least 1")
    edits = list(edits or kinds())
    index = gen.open_codes(mmap=False)
    codes, ids = index.codes(), np.asarray(index.ids, dtype=np.int64)
    if len(ids) < 2:
        raise ArgumentError(f"{gen.store.path}: calibration needs at least 2 indexed images, the index has {len(ids)}")
    with gen.catalog() as cat:
        meta = cat.get_meta()
        rng = np.random.default_rng(seed)
        picked = np.sort(rng.choice(len(ids), size=min(sample, len(ids)), replace=False))
        files = cat.files_for(ids[picked].tolist())
    originals, skipped = [], []
    for pos in picked.tolist():
        rel, size, mtime_ns = files[int(ids[pos])]
        path = os.path.join(meta["root"], rel)
        try:
            st = os.stat(path)
        except OSError as exc:
            skipped.append(f"{path}: {exc.strerror or exc}")
            continue
        if (st.st_size, st.st_mtime_ns) != (size, mtime_ns):
            skipped.append(f"{path}: changed since the index was built (run `hashtool index build` first)")
            continue
        originals.append((path, codes[pos]))
    per_edit, unreadable = copy_distances(encoder, originals, edits, rng, progress)
    skipped += unreadable
    copy_d = np.array([d for k in edits for d in per_edit[k]], dtype=np.int64)
    if len(copy_d) == 0:
        raise ArgumentError(f"{gen.store.path}: none of the {len(picked)} sampled images could be read; nothing calibrated")
    unrelated = unrelated_distances(codes, pairs, rng)
    nbits = int(meta["nbits"])
    chosen, recall_r, false_r = choose_radius(copy_d, unrelated, nbits, recall)
    if radius is not None:
        chosen = min(int(radius), nbits)
    n = len(ids)
    return Calibration(
        radius=chosen, recall=recall_r[chosen], target_recall=recall, false_pair_rate=false_r[chosen],
        expected_false_pairs=false_r[chosen] * n * (n - 1) / 2, images=len(originals) - len(unreadable),
        copies=len(copy_d), unrelated_pairs=len(unrelated), edits=edits, seed=seed,
        encoder_sha256=str(meta.get("encoder_sha256")), created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        recall_by_radius=recall_r, false_by_radius=false_r,
        recall_by_edit={k: (float((np.array(v) <= chosen).mean()) if v else 0.0) for k, v in per_edit.items()},
        skipped=skipped,
    )


def store_calibration(store, gen, calibration: Calibration) -> str:
    """Write a new generation of ``store`` that is ``gen`` plus the calibration, and make it live.

    Refuses (IndexFormatError) if the live generation is no longer ``gen`` (a build ran meanwhile), so a
    calibration never undoes a build. Returns the new generation's name. Holds the writers' lock.
    """
    with store.write_lock():
        return _store_calibration_locked(store, gen, calibration)


def _store_calibration_locked(store, gen, calibration) -> str:
    import shutil

    from hashtool.store.build import _link_or_copy
    from hashtool.store.store import Catalog

    new = store.new_generation()
    try:
        _link_or_copy(gen.codes_path, new.codes_path)
        _link_or_copy(gen.encoder_path, new.encoder_path)
        shutil.copyfile(gen.catalog_path, new.catalog_path)
        with Catalog.open(new.catalog_path, readonly=False) as cat:
            with cat.conn:
                cat.set_meta(**{META_KEY: calibration.as_dict()})
        log = gen.log_path.read_text() if gen.log_path.exists() else ""
        new.log_path.write_text(log + f"calibrated at {calibration.created}: radius {calibration.radius}\n")
        if store.current().name != gen.name:
            raise IndexFormatError(f"{store.path}: the index changed while calibrating; run `hashtool calibrate` again")
        store.commit(new)
    except BaseException:
        store.discard(new)
        raise
    return new.name
