"""Integrations with other trainers (each imports its framework only when imported itself).

* `adaptive.integrations.lightning.AdaptiveCallback`: PyTorch Lightning (extra `lightning`).
"""

__all__: list[str] = []
