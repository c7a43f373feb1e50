"""Named defaults shared by the controllers, the trainer's config and replay (no torch
import, so replay and the CLI can read them cheaply). default.toml repeats them as data;
tests/test_config.py checks that it agrees with the controllers' signatures."""

#: Default bound r on a loss weight's relative change (`adaptive.loss_adjustment_range`).
LOSS_ADJUSTMENT_RANGE = 0.3
#: Default bound on the scheduler's |delta| (`adaptive.scheduler_adjustment_range`).
SCHEDULER_ADJUSTMENT_RANGE = 0.3
