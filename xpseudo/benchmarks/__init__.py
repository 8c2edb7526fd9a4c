"""Measurements behind tools/benchmark.py (each module one task; all need detectron2)."""
