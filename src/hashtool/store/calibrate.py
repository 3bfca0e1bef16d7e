"""The duplicate radius of an index: calibrated from edited copies, stored in the catalog (numpy only).

``hashtool calibrate`` stores its result under the catalog meta key :data:`META_KEY`; ``dups`` without
``--max-distance`` uses it, and without a calibration :data:`DEFAULT_RADIUS`.
"""

from __future__ import annotations

META_KEY = "calibration"
DEFAULT_RADIUS = 2  # bits; what `dups` uses on an index that was never calibrated


def dups_radius(meta: dict) -> tuple[int, str]:
    """(radius, a sentence saying where it comes from) for ``dups`` without --max-distance."""
    cal = meta.get(META_KEY)
    if isinstance(cal, dict) and cal.get("encoder_sha256") == meta.get("encoder_sha256") and isinstance(cal.get("radius"), int):
        return cal["radius"], (
            f"using the calibrated radius {cal['radius']} (recall {cal['recall']:.0%} of edited copies, "
            f"expected false pairs {cal['false_pair_rate']:.2%}, calibrated {cal.get('created', '?')}); "
            "-r/--max-distance overrides it"
        )
    return DEFAULT_RADIUS, (
        f"using the default radius {DEFAULT_RADIUS} (this index has no calibration: `hashtool calibrate` measures one); "
        "-r/--max-distance overrides it"
    )
