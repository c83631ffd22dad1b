"""``distill perceive``: collaborative perception with DiscoGraph on the multi-agent BEV world —
the early-fusion teacher, every fusion baseline and the distilled student, over seeds."""
