"""Named sweeps: ``smoke`` (CI), ``tiny`` (a laptop, the README's main job), ``paper``.

Each is a plain dict in the spec's own format, so ``gzipscale sweep --preset tiny
--dry-run`` shows exactly what a hand-written TOML file would need to say.
"""

from __future__ import annotations

from gzipscale.helpers import SpecError

from .spec import SweepSpec

# The laptop-scale grid shared by `tiny` and `reproduction`: 6 shapes (12K to 430K
# parameters at vocabulary 301) x 6 nested data sizes, trained with the `cpu` preset.
TINY_GRID = {
    "shapes": ["tiny-1", "tiny-2", "tiny-3", "tiny-4", "tiny-5", "tiny-6"],
    "data_sizes": [16_384, 32_768, 65_536, 131_072, 262_144, 524_288],
    "eval_tokens": 131_072,
}
TINY_TRAIN = {"preset": "cpu", "batch_size": 8, "checkpoint_every": 100}

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
    # The paper's experiment at laptop scale: three grammars of clearly different H from
    # the same-vocabulary series, 6 tiny shapes x 6 data sizes = 36 runs each, 108 runs.
    "tiny": {
        "name": "tiny",
        "grammars": [
            {"grammar": "3,300,2,2", "seed": 0},
            {"grammar": "10,300,3,5", "seed": 0},
            {"grammar": "20,300,5,10", "seed": 0},
        ],
        **TINY_GRID,
        "train": TINY_TRAIN,
    },
    # The reproduction study (docs/reproduction.md): the tiny grid over the first four
    # grammars of the same-vocabulary series and two grammars of about the same H as
    # 20,300,5,10 but very different syntax (fewer terminals, long right-hand sides).
    # Every model has the vocabulary 301, as the paper held its vocabulary at 32001, so
    # N means the same thing for every grammar. 216 runs, about 20 minutes on 2 cores.
    "reproduction": {
        "name": "reproduction",
        "grammars": [
            {"grammar": "3,300,2,2", "seed": 0},
            {"grammar": "10,300,3,5", "seed": 0},
            {"grammar": "20,300,5,10", "seed": 0},
            {"grammar": "50,300,10,20", "seed": 0},
            {"grammar": "30,200,15,10", "seed": 0},
            {"grammar": "50,100,20,20", "seed": 0},
        ],
        **TINY_GRID,
        "train": {**TINY_TRAIN, "vocab_size": 301},
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
