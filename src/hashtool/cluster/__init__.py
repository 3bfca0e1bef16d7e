"""hashtool on a Dask cluster (the optional ``[cluster]`` extra: ``pip install 'hashtool[cluster]'``).

* :func:`connect`: a Dask client for a scheduler address (``tcp://HOST:PORT``, Dask's own form) or
  ``local:N``, a :class:`distributed.LocalCluster` of N worker processes on this machine.
* :func:`dask_encode_files`: the ``encode_files`` callable of :func:`hashtool.store.build.build`, run on
  the cluster's workers: the client walks the folder and writes the index; workers encode batches of
  paths (a file system every worker reads) and return codes and failures. Same results as a local build.
* :class:`DaskShardedIndex`: a shard set held by Dask actors on the workers, queried with one broadcast
  and merged exactly, with the search interface of :class:`hashtool.hashindex.ShardedIndex`.

Every worker needs the same hashtool version installed; the encoder file travels from the client, so it
need not be on the workers' file system. ``distributed`` is imported only when one of these is used.
"""

from __future__ import annotations

from hashtool.cluster.client import SCHEDULER_ENV_VAR, connect, parse_address
from hashtool.cluster.encode import dask_encode_files
from hashtool.cluster.search import DaskShardedIndex

__all__ = ["SCHEDULER_ENV_VAR", "DaskShardedIndex", "connect", "dask_encode_files", "parse_address"]
