"""Llama-style decoders and resumable training runs."""
