"""Image sources, the candidate cutout cache and the Lightning DataModule.

Submodules: ``sources`` (simulated / npz / challenge images, one at a time), ``cache`` (cut,
labelled candidates per file, built once), ``splits`` (by file), ``sampling`` (fresh negatives
every epoch), ``transforms`` (model inputs, shared with detection), ``datamodule``.
Import from the submodules; this package imports nothing heavy.
"""
