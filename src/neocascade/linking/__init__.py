"""Linking: detections of several exposures of one field -> tracklets and stationary sources (pure functions)."""

from neocascade.linking.sky import field_centre, from_tangent_plane, image_footprint, position_angle, tangent_plane
from neocascade.linking.tracklets import (
    REQUIRED_KEYS, TRACKLET_COLUMNS, Linker, LinkResult, link_detections, stationary_mask,
)

__all__ = [
    "REQUIRED_KEYS", "TRACKLET_COLUMNS", "Linker", "LinkResult", "link_detections", "stationary_mask",
    "field_centre", "from_tangent_plane", "image_footprint", "position_angle", "tangent_plane",
]
