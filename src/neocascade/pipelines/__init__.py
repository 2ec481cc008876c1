"""Task functions behind the entry scripts (simulate, train, evaluate, detect, calibrate, demo, paper)."""
