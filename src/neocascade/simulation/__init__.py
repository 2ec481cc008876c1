"""ZTF-like difference-image simulator: correlated noise, Moffat PSF, trailed asteroids and nuisances."""

from neocascade.simulation.config import SimConfig
from neocascade.simulation.quadrant import TRUTH_COLUMNS, Conditions, draw_conditions, simulate_file, simulate_image

# Bumped whenever the same config and seed would give different pixels (it keys candidate caches).
SIMULATOR_VERSION = "1.0"

__all__ = ["SIMULATOR_VERSION", "SimConfig", "TRUTH_COLUMNS", "Conditions", "draw_conditions", "simulate_file",
           "simulate_image"]
