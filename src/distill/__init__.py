"""distill: teacher–student learning on PyTorch.

Layers (imports point down): ``losses``/``models``/``methods`` (pure PyTorch) → ``engine``
(the training loop, checkpoints) → edges (``data``, ``config``, ``runner``, ``report``, ``cli``).
"""

__version__ = "0.1.0"
