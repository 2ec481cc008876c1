"""Image preprocessing: NaN-aware Gaussian filtering, pixel masking and robust noise estimates."""

from neocascade.preprocess.filters import gaussian_filter, mask_invalid
from neocascade.preprocess.noise import local_noise_map, robust_noise

__all__ = ["gaussian_filter", "local_noise_map", "mask_invalid", "robust_noise"]
