"""Distribution shift: ooDML-style splits of rising difficulty and the evaluation across them."""
