"""``distill lm``: distilling a small GPT teacher into a smaller one — next-token CE, token-level
KD, sequence-level KD and GKD."""
