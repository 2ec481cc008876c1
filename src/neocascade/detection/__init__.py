"""Detection on data nobody labelled: a trained cascade applied to images and alert stamps.

``detector`` (image or stamp -> scored detections), ``catalogue`` (columns, CSV), ``inputs`` (what
``detect.py input=...`` reads) and ``alerts`` (the ZTF alert sim-to-real check).
"""
