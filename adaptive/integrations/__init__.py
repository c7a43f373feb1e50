"""Integrations with other trainers (each imports its framework only when imported itself).

* `adaptive.integrations.lightning.AdaptiveCallback`: PyTorch Lightning (extra `lightning`).
* `adaptive.integrations.transformers.AdaptiveTrainer` / `AdaptiveTrainerCallback`: the
  Hugging Face Trainer (extra `transformers`).
"""

__all__: list[str] = []
