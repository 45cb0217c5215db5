"""gzipscale: data-dependent scaling laws measured on random PCFGs, on Ray.

Layers, bottom to top (each imports only from the layers below it):
``vocabulary`` and ``helpers`` → ``grammars`` → ``trainers`` → ``analysis`` (uses neither
``trainers`` nor ``orchestrator``) → ``orchestrator`` → ``cli``.
"""

__version__ = "0.1.0"
