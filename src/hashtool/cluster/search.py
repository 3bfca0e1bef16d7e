"""Sharded search on a Dask cluster: each shard held by an actor on a worker, queried with one broadcast.

A query batch is sent to every shard actor at once (the calls run concurrently on the workers); each
answers with its own ``k`` best or its range matches, and the client merges them exactly with
:func:`hashtool.hashindex.sharded.merge_knn` / ``merge_range``: the answers are those of one index over
all the codes, ties included.

Actors are not restarted by Dask: if a worker holding a shard dies, searches raise
:class:`~hashtool.errors.ClusterError` and the index must be opened again (the shard files are where they
were). Open from a manifest on a shared file system (:meth:`DaskShardedIndex.open`) so that the workers
read the shards themselves, or from an in-memory :class:`~hashtool.hashindex.ShardedIndex`
(:meth:`DaskShardedIndex.from_index`, the codes travel from the client).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hashtool.errors import ClusterError
from hashtool.hashindex.sharded import merge_knn, merge_range, read_manifest


class ShardActor:
    """One shard on a worker: an index file (``source`` a path) or ``(structure, nbits, codes, ids)``."""

    def __init__(self, source, mmap: bool = True, verify: bool = True, threads: int | None = None):
        from hashtool.hashindex import FlatIndex, MIHIndex, load_index

        if isinstance(source, (str, Path)):
            self.index = load_index(source, mmap=mmap, verify=verify, threads=threads)
        else:
            structure, nbits, codes, ids = source
            self.index = (MIHIndex if structure == "mih" else FlatIndex)(nbits, threads=threads)
            self.index.add(codes, ids)

    def shape(self) -> tuple[int, int]:
        return len(self.index), self.index.nbits

    def search(self, queries, k):
        return self.index.search(queries, k)

    def range_search(self, queries, max_distance):
        return self.index.range_search(queries, max_distance)


class DaskShardedIndex:
    """Read-only search over shards held by Dask actors; same ``search``/``range_search`` as ShardedIndex."""

    def __init__(self, client, actors, nbits: int):
        self._client = client
        self._actors = list(actors)
        self._nbits = nbits
        shapes = self._call("shape")
        self._sizes = [n for n, _ in shapes]
        if any(b != nbits for _, b in shapes):
            raise ClusterError(f"the shards hold codes of {sorted({b for _, b in shapes})} bits, not {nbits}")

    @classmethod
    def open(cls, client, manifest_path, *, mmap: bool = True, verify: bool = True, threads: int | None = None):
        """Actors open the shards of ``manifest_path`` (a path every worker reads), spread over the workers."""
        manifest_path = Path(manifest_path).resolve()
        manifest = read_manifest(manifest_path)
        sources = [str(manifest_path.parent / e["file"]) for e in manifest["shards"]]
        return cls(client, _start_actors(client, sources, mmap=mmap, verify=verify, threads=threads), manifest["nbits"])

    @classmethod
    def from_index(cls, client, index, threads: int | None = None):
        """Send the shards of a :class:`~hashtool.hashindex.ShardedIndex` to actors on the workers."""
        sources = [(index.structure, index.nbits, s.codes(), np.asarray(s.ids)) for s in index.shards]
        return cls(client, _start_actors(client, sources, threads=threads), index.nbits)

    @property
    def nbits(self) -> int:
        return self._nbits

    def __len__(self) -> int:
        return sum(self._sizes)

    def __repr__(self) -> str:
        return f"DaskShardedIndex(nbits={self._nbits}, n={len(self)}, shards={len(self._actors)})"

    def _call(self, method: str, *args) -> list:
        try:
            pending = [getattr(a, method)(*args) for a in self._actors]  # all sent before any answer is awaited
            return [p.result() for p in pending]
        except (OSError, TimeoutError, RuntimeError) as exc:  # RuntimeError: "Worker holding Actor was lost"
            raise ClusterError(
                f"a shard actor did not answer ({type(exc).__name__}: {str(exc)[:200]}); its worker may have died: "
                "open the index again"
            ) from None

    def search(self, queries, k):
        """The ``k`` nearest codes over all shards, sorted by (distance, id), -1 padding."""
        from hashtool.hashindex import FlatIndex

        if not self._actors:
            return FlatIndex(self._nbits).search(queries, k)
        return merge_knn(self._call("search", np.asarray(queries), k), int(k), self._nbits)

    def range_search(self, queries, max_distance):
        """Every code within ``max_distance`` (inclusive) over all shards, CSR ``(lims, distances, ids)``."""
        from hashtool.hashindex import FlatIndex

        if not self._actors:
            return FlatIndex(self._nbits).range_search(queries, max_distance)
        parts = self._call("range_search", np.asarray(queries), max_distance)
        return merge_range(parts, parts[0][0].shape[0] - 1)

    def close(self) -> None:
        """Release the actors (their workers drop the shards)."""
        self._actors = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _start_actors(client, sources, **kwargs) -> list:
    workers = sorted(client.scheduler_info()["workers"])
    if not workers:
        raise ClusterError("the cluster has no workers to hold the shards; start some and try again")
    futures = [
        client.submit(ShardActor, src, actor=True, workers=[workers[i % len(workers)]], pure=False, **kwargs)
        for i, src in enumerate(sources)
    ]
    return [f.result() for f in futures]
