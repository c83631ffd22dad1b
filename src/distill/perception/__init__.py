"""Collaborative perception: a multi-agent BEV world, warps between agents' frames, fusion models
and DiscoGraph."""
