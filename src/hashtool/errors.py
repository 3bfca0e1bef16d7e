"""The exception hierarchy. Every error hashtool raises on purpose derives from :class:`HashtoolError`.

Errors about a value the caller passed also derive from :class:`ValueError`, so generic code that
catches ``ValueError`` keeps working.
"""


class HashtoolError(Exception):
    """Base class of every hashtool error."""


class ArgumentError(HashtoolError, ValueError):
    """An argument has the wrong type, shape or range."""


class CodeError(ArgumentError):
    """An array is not a valid hash code (wrong dtype, width, values, NaN, empty...)."""


class IndexFormatError(HashtoolError):
    """An index file is missing, truncated, corrupted, of another version, or not an index at all."""


class IndexLockedError(HashtoolError):
    """Another process is writing the index (and the caller asked not to wait)."""


class ImageError(HashtoolError):
    """An image cannot be read: unsupported format, corrupt or truncated data, too large..."""


class ModelError(HashtoolError):
    """A checkpoint or exported encoder cannot be used: not hashtool's, wrong version, bad metadata."""


class DatasetError(HashtoolError):
    """A dataset cannot be found or read."""


class ClusterError(HashtoolError):
    """A Dask cluster cannot be reached, or lost the work it was given (see :mod:`hashtool.cluster`)."""
