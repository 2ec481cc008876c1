"""Small helpers: atomic writes, Hydra instantiation, logging, the sweep summary callback."""
