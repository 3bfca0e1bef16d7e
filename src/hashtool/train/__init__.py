"""Everything that needs PyTorch: data, models, losses, the training loop, checkpoints.

Install with ``pip install 'hashtool[train]'``. Nothing outside ``hashtool.train`` and ``hashtool.export``
imports this package.
"""
