"""Sweeps on Ray Tune, the live analysis glue, the live display and reports of sweeps."""
