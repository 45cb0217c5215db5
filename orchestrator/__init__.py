"""Sweeps on Ray, the gzipscale command line and the progress display."""
