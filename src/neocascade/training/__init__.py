"""Training: ``classifier`` (the LightningModule for the CNNs), ``cascade`` (stage-1 positives → stage-2 set),
``artifact`` (the saved cascade). Submodules are imported on demand (Lightning is slow to import)."""
