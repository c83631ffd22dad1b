"""``distill shift``: does distillation's gain survive distribution shift? ooDML-style splits of
rising FID, the teacher and each method trained on every split, accuracy and KD gain against FID."""
