"""trainers/config.py: the training settings, their checks, the paper preset, the schedule."""

from __future__ import annotations

import pytest

from gzipscale.trainers.config import ConfigError, TrainConfig, preset


def test_config_errors_name_the_field_and_the_allowed_values():
    with pytest.raises(ConfigError, match="field 'schedule' must be one of constant, cosine"):
        TrainConfig(schedule="linear")
    with pytest.raises(ConfigError, match="field 'lr' must be in"):
        TrainConfig(lr=0.0)
    with pytest.raises(ConfigError, match="field 'batch_size' must be >= 1"):
        TrainConfig(batch_size=0)
    with pytest.raises(ConfigError, match="unknown training setting"):
        TrainConfig.from_dict({"learning_rate": 1e-3})


def test_paper_preset_is_the_papers_setup():
    cfg = preset("paper")
    assert (cfg.lr, cfg.beta1, cfg.beta2, cfg.eps, cfg.weight_decay) == (5e-5, 0.9, 0.999, 1e-6, 0)
    assert cfg.batch_size == 32 and cfg.schedule == "constant" and cfg.warmup_steps == 0
    assert [cfg.lr_at(s, 100, 64) for s in (0, 50, 99)] == [5e-5] * 3


def test_cpu_schedule_warms_up_then_decays_to_the_floor():
    cfg = TrainConfig(lr=1e-3, lr_scaling="none", warmup_steps=10, min_lr_ratio=0.1)
    lrs = [cfg.lr_at(s, 200, 64) for s in range(200)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:], strict=False))
    assert lrs[-1] == pytest.approx(1e-4, rel=0.01)
    # width scaling: half the width, twice the rate
    wide = TrainConfig(lr=1e-3)
    assert wide.peak_lr(32) == pytest.approx(2 * wide.peak_lr(64))
