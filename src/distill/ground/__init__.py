"""``distill ground``: SimVG's token branch trained alone, with a fixed mix, and with DWBD (one- and
two-stage), over seeds."""
