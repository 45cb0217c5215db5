"""Scaling-law fits, gzip-dependent laws and the compute-optimal frontier."""
