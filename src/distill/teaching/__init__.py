"""Learning to teach: teachers that write the student's loss (L2T-DLF, L2T-DLN) and the
reverse-mode machinery that trains them through the student's unrolled steps."""
