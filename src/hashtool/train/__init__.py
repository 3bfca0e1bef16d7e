"""Everything that needs PyTorch: data, models, losses, the training loop, checkpoints.

Install with ``pip install 'hashtool[train]'``. Nothing outside ``hashtool.train`` and ``hashtool.export``
imports this package.
"""

import os as _os

# OpenMP threads that spin while waiting make a 2-thread torch process crawl (measured 5-10x slower) when
# another process shares the cores; passive waiting costs little when the cores are free. Effective only
# when set before torch is first imported, which importing hashtool.train before torch guarantees.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
