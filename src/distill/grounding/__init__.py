"""Visual grounding: a seeded synthetic referring-expression task, a small SimVG-style model, and
dynamic weight-balance distillation (DWBD) from its decoder branch into its token branch."""
