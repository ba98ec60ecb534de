"""Monitoring: drift of device sketches against a model's reference bins, and realized and
estimated (CBPE) AUROC/AP from predictions and delayed outcomes.

``stats`` holds the formulas (numpy only), ``histograms`` the sketch-shaped counts and their
comparison, ``aggregate`` the database side: per (model version, cohort, window) reports as
plain JSON.
"""
