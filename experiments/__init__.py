"""Experiment entry points (config -> build -> fit -> report) and their ml_collections configs."""
