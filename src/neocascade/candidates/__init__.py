"""Candidate selection (footprint, grid, local maxima), cutouts, labels and the shared extraction path."""

from neocascade.candidates.cutouts import cutouts
from neocascade.candidates.extract import Candidates, extract_candidates
from neocascade.candidates.footprint import FootprintSelector, footprint_peaks
from neocascade.candidates.grid import GridSelector, grid_centres
from neocascade.candidates.labels import match_centres, match_trails
from neocascade.candidates.peaks import PeakSelector, local_maxima

__all__ = [
    "Candidates",
    "FootprintSelector",
    "GridSelector",
    "PeakSelector",
    "cutouts",
    "extract_candidates",
    "footprint_peaks",
    "grid_centres",
    "local_maxima",
    "match_centres",
    "match_trails",
]
