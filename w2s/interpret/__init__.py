"""Interpretability of the Aligner (paper §3.4, App. B.6): reading vectors, LAT scans, representation control."""
