"""Llama-style decoders and resumable training runs (see the trainers issue)."""
