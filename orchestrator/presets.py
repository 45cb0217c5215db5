"""Named sweeps: ``smoke`` (CI), ``tiny`` (a laptop, the README's main job), ``paper``.

Each is a plain dict in the spec's own format, so ``gzipscale sweep --preset tiny
--dry-run`` shows exactly what a hand-written TOML file would need to say.
"""

from __future__ import annotations

from gzipscale.helpers import SpecError

from .spec import SweepSpec

# The laptop-scale grid shared by `tiny` and `reproduction`, chosen by the design rules
# of docs/design.md from the `pilot` sweep: 4 shapes (26K to 203K parameters at vocabulary
# 301) x 5 data sizes from 512K tokens (256 optimizer steps of 8 x 256 tokens, past the
# warmup and the early plateau where every model size has the same loss) to 2M, spaced
# by sqrt(2) where the excess loss L - floor falls as a power law; nested-data trials
# (one per grammar and shape, WSD schedule), so the five sizes cost one run to 2M plus
# four cooldowns.
TINY_GRID = {
    "shapes": ["tiny-2", "tiny-3", "tiny-4", "tiny-5"],
    "data_sizes": [524_288, 741_376, 1_048_576, 1_482_752, 2_097_152],
    "eval_tokens": 131_072,
    "nested": True,
}
# compile off: torch.compile's start-up (about 90 s per trial on 2 cores) costs more than
# it saves on these models.
TINY_TRAIN = {
    "preset": "cpu",
    "batch_size": 8,
    "checkpoint_every": 200,
    "schedule": "wsd",
    "vocab_size": 301,
    "compile": "off",
}
# The pilot the design rules read: five grammars of the paper's series that the
# smallest models do not learn to their floor within 128 steps, the five smallest tiny
# shapes and data sizes doubling from 64 to 1024 steps.
PILOT_GRID = {
    "shapes": ["tiny-0", "tiny-1", "tiny-2", "tiny-3", "tiny-4"],
    "data_sizes": [131_072, 262_144, 524_288, 1_048_576, 2_097_152],
    "eval_tokens": 131_072,
    "nested": True,
}

PRESETS: dict[str, dict] = {
    # 12 runs of the three smallest tiny shapes on two grammars: every stage of a sweep
    # (data, Tune trials with checkpoints, results.csv, live fits, report) in about 2
    # minutes. Six runs per grammar, the fewest a free fit takes, so the report fits both.
    "smoke": {
        "name": "smoke",
        "grammars": [{"grammar": "3,300,2,2", "seed": 0}, {"grammar": "20,300,5,10", "seed": 0}],
        "shapes": ["tiny-0", "tiny-1", "tiny-2"],
        "data_sizes": [16_384, 49_152],
        "eval_tokens": 16_384,
        "train": {"preset": "cpu", "batch_size": 8, "checkpoint_every": 4},
    },
    # The paper's experiment at laptop scale (the README's main job): the grammars of the
    # pilot whose floor-anchored laws the design rules identify on the tiny grid (α and β
    # intervals excluding 0 and narrower than 2x, RMS log residual of the excess at most
    # 0.05); docs/design.md says why the others were dropped.
    "tiny": {
        "name": "tiny",
        "grammars": [
            {"grammar": "50,100,20,20", "seed": 0},
            {"grammar": "50,300,10,20", "seed": 0},
        ],
        **TINY_GRID,
        "train": TINY_TRAIN,
    },
    # The pilot of docs/design.md: `gzipscale sweep --preset pilot`, then
    # `gzipscale design runs/pilot` applies the rules to it. 125 runs in 25 trials.
    "pilot": {
        "name": "pilot",
        "grammars": [
            {"grammar": "20,300,5,15", "seed": 0},
            {"grammar": "30,200,15,10", "seed": 0},
            {"grammar": "50,100,20,20", "seed": 0},
            {"grammar": "50,300,10,20", "seed": 0},
            {"grammar": "200,300,50,200", "seed": 0},
        ],
        **PILOT_GRID,
        "train": TINY_TRAIN,
    },
    # The reproduction study (docs/reproduction.md): the tiny grid over six grammars: the
    # paper's three same-H grammars (H about 0.36-0.39, very different syntax) and three
    # of its same-vocabulary series (H 0.36 to 0.50). Every model has the vocabulary 301,
    # as the paper held its vocabulary at 32001, so N means the same thing for every
    # grammar. 120 runs in 24 nested trials.
    "reproduction": {
        "name": "reproduction",
        "grammars": [
            {"grammar": "20,300,5,10", "seed": 0},
            {"grammar": "20,300,5,15", "seed": 0},
            {"grammar": "30,200,15,10", "seed": 0},
            {"grammar": "50,100,20,20", "seed": 0},
            {"grammar": "50,300,10,20", "seed": 0},
            {"grammar": "100,300,30,100", "seed": 0},
        ],
        **TINY_GRID,
        "train": TINY_TRAIN,
    },
    # The paper's main series (Pandey 2024) with its six shapes at vocabulary
    # 32001 and its data sizes, trained as the paper did; for a GPU cluster. Nested data:
    # at the paper's constant learning rate a smaller size's run is exactly the first
    # part of the largest one, so one trial per (grammar, shape) gives all six rows, the
    # same results for 1.76x fewer training tokens.
    "paper": {
        "name": "paper",
        "grammars": [
            {"grammar": "3,20,2,2", "seed": 0},
            {"grammar": "10,150,3,5", "seed": 0},
            {"grammar": "20,300,5,10", "seed": 0},
            {"grammar": "30,400,8,10", "seed": 0},
            {"grammar": "50,500,15,20", "seed": 0},
            {"grammar": "100,2000,30,100", "seed": 0},
        ],
        "shapes": ["paper-4m", "paper-9m", "paper-20m", "paper-59m", "paper-275m", "paper-1.4b"],
        "data_sizes": ["100K", "1M", "5M", "20M", "50M", "100M"],
        "eval_tokens": 131_072,
        "train": {"preset": "paper", "vocab_size": 32001, "checkpoint_every": 500},
        "resources": {"gpu": "yes", "cpus_per_trial": 2, "gpu_fraction": 0.25},
        "nested": True,
    },
}


def preset_spec(name: str) -> SweepSpec:
    try:
        data = PRESETS[name]
    except KeyError:
        raise SpecError(
            f"field 'preset' must be one of {', '.join(PRESETS)}, got {name!r}"
        ) from None
    return SweepSpec.from_dict(data)
