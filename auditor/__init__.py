"""Compliance auditor and reproducibility checker for Parameter Golf submissions."""

__version__ = "0.1.0"
