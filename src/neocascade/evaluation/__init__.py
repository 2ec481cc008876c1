"""Evaluation: candidate and asteroid-level metrics, completeness curves and m50, figures, reports."""
