"""A sweep's specification: what to train (grammars x shapes x data sizes) and how.

Written by hand as TOML (``gzipscale sweep --spec FILE``) or taken from a preset
(:mod:`orchestrator.presets`); the resolved spec is saved as ``sweep.json`` in the run
directory, and a later command with the same name must resolve to the same spec.

Example::

    name = "my-sweep"
    shapes = ["tiny-1", "tiny-2", "tiny-3"]
    data_sizes = ["25K", "100K", "400K"]
    eval_tokens = "128K"
    nested = false          # true: one trial per (grammar, shape) trains to the largest
                            # size and reports every size's row on the way (train.schedule
                            # constant or wsd)
    order = "longest-first" # or "cheapest-first": which trials start first

    [[grammars]]
    grammar = "20,300,5,10"
    seed = 0

    [train]            # trainers.config.TrainConfig fields; preset = "cpu" | "paper"
    preset = "cpu"

    [resources]
    cpus_per_trial = 1
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import tomllib

from gzipscale.grammars.spec import GrammarSpec
from gzipscale.helpers import (
    PathNotFound,
    SpecError,
    check_choice,
    check_int,
    check_number,
    parse_size,
    spec_differences,
)
from gzipscale.trainers.config import TrainConfig, preset
from gzipscale.trainers.shapes import SHAPES
from gzipscale.vocabulary import DEFAULT_CONTEXT_LENGTH, EVAL_TOKENS, SAMPLER_MODES

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
GPU_MODES = ("auto", "yes", "no")
# Which trials start first: the longest (largest trained N·D), so that the sweep does not
# end with one long trial running alone; or the cheapest, so that a sweep stopped early
# already has the small runs of every grammar.
ORDERS = ("longest-first", "cheapest-first")
NESTABLE_SCHEDULES = ("constant", "wsd")


@dataclass(frozen=True)
class GrammarEntry:
    grammar: str  # "NT,T,LEN,OPTS"
    seed: int = 0
    sampler: str = "prefix"

    def __post_init__(self) -> None:
        if not isinstance(self.grammar, str):
            raise SpecError(
                f"field 'grammars.grammar' must be a string such as \"20,300,5,10\", got {self.grammar!r}"
            )
        check_int("grammars.seed", self.seed, 0, 2**63 - 1)  # strict: it is saved as given
        GrammarSpec.parse(self.grammar, seed=self.seed)  # raises SpecError naming the field
        check_choice("grammars.sampler", self.sampler, SAMPLER_MODES)

    @property
    def spec(self) -> GrammarSpec:
        return GrammarSpec.parse(self.grammar, seed=self.seed)

    @property
    def dataset(self) -> str:
        """The dataset's name: the grammar's, plus the sampler unless it is the default."""
        suffix = "" if self.sampler == "prefix" else f"-{self.sampler}"
        return self.spec.name + suffix


@dataclass(frozen=True)
class Resources:
    """How trials map onto a cluster.

    On a cluster without GPUs every trial takes ``cpus_per_trial`` CPUs. With GPUs, a
    model below ``whole_gpu_params`` parameters shares a GPU (``gpu_fraction`` of one);
    from there on it takes a whole GPU; at ``multi_gpu_params`` and above a run trains
    on ``gpus_per_multi`` GPUs through a Ray Train TorchTrainer launched from its trial.
    """

    cpus_per_trial: float = 1.0
    gpu: str = "auto"  # "auto": use GPUs if the cluster has any when the sweep starts
    gpu_fraction: float = 0.25
    whole_gpu_params: int = 50_000_000
    multi_gpu_params: int = 0  # 0: never
    gpus_per_multi: int = 4
    max_concurrent_trials: int = 0  # 0: as many as the cluster holds

    def __post_init__(self) -> None:
        check_number("resources.cpus_per_trial", self.cpus_per_trial, 0, 1024, low_open=True)
        check_choice("resources.gpu", self.gpu, GPU_MODES)
        check_number("resources.gpu_fraction", self.gpu_fraction, 0, 1, low_open=True)
        check_int("resources.whole_gpu_params", self.whole_gpu_params, 0, 10**13)
        check_int("resources.multi_gpu_params", self.multi_gpu_params, 0, 10**13)
        check_int("resources.gpus_per_multi", self.gpus_per_multi, 1, 1024)
        check_int("resources.max_concurrent_trials", self.max_concurrent_trials, 0, 100_000)


@dataclass(frozen=True)
class SweepSpec:
    name: str
    grammars: tuple[GrammarEntry, ...]
    shapes: tuple[str, ...]
    data_sizes: tuple[int, ...]
    train: TrainConfig = field(default_factory=TrainConfig)
    eval_tokens: int = EVAL_TOKENS
    context_length: int = DEFAULT_CONTEXT_LENGTH
    resources: Resources = field(default_factory=Resources)
    max_failures: int = 2  # retries of a trial that crashed (not of a diverged run)
    # Nested data: one trial per (grammar, shape), trained to the largest data size, that
    # reports the row of every smaller size as it passes it (trainers.train, eval_at).
    nested: bool = False
    order: str = "longest-first"  # one of ORDERS

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not NAME_PATTERN.match(self.name):
            raise SpecError(
                f"field 'name' must be 1-100 letters, digits, '.', '_' or '-' (starting with a "
                f"letter or digit), got {self.name!r}"
            )
        if not self.grammars:
            raise SpecError("field 'grammars' must list at least one grammar")
        names = [g.dataset for g in self.grammars]
        if len(set(names)) != len(names):
            raise SpecError("field 'grammars' lists the same grammar, seed and sampler twice")
        if not self.shapes:
            raise SpecError("field 'shapes' must list at least one model shape")
        for s in self.shapes:
            if s not in SHAPES:
                raise SpecError(
                    f"field 'shapes' must name shapes among {', '.join(SHAPES)}, got {s!r}"
                )
        if len(set(self.shapes)) != len(self.shapes):
            raise SpecError("field 'shapes' lists a shape twice")
        # Types first (strict: 256.0 or "2" would be saved as given and fail every trial).
        check_int("context_length", self.context_length, 2, 1 << 20)
        check_int("max_failures", self.max_failures, -1, 1000)
        if not self.data_sizes:
            raise SpecError("field 'data_sizes' must list at least one size")
        if len(set(self.data_sizes)) != len(self.data_sizes):
            raise SpecError("field 'data_sizes' lists a size twice")
        for d in self.data_sizes:
            check_int("data_sizes", d, self.context_length, 10**13)
        check_int("eval_tokens", self.eval_tokens, self.context_length, 10**12)
        if not isinstance(self.nested, bool):
            raise SpecError(f"field 'nested' must be true or false, got {self.nested!r}")
        check_choice("order", self.order, ORDERS)
        if self.nested and self.train.schedule not in NESTABLE_SCHEDULES:
            raise SpecError(
                f"field 'nested': the {self.train.schedule} schedule decays over a run's whole "
                "length, so a smaller data size partway through is not a run of that size; set "
                'train.schedule = "wsd" (warmup-stable-decay) or "constant", or nested = false'
            )
        if self.train.eval_tokens != self.eval_tokens:  # from_dict refused a conflict
            object.__setattr__(
                self, "train", self.train.with_overrides(eval_tokens=self.eval_tokens)
            )

    # -- derived -------------------------------------------------------------------------

    @property
    def max_tokens(self) -> int:
        return max(self.data_sizes)

    def runs_per_grammar(self) -> int:
        return len(self.shapes) * len(self.data_sizes)

    # -- (de)serialisation ---------------------------------------------------------------

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "grammars": [asdict(g) for g in self.grammars],
            "shapes": list(self.shapes),
            "data_sizes": list(self.data_sizes),
            "train": self.train.to_dict(),
            "eval_tokens": self.eval_tokens,
            "context_length": self.context_length,
            "resources": asdict(self.resources),
            "max_failures": self.max_failures,
            "nested": self.nested,
            "order": self.order,
        }

    @classmethod
    def from_dict(cls, d: dict) -> SweepSpec:
        if not isinstance(d, dict):
            raise SpecError(
                f"a sweep spec must be a table (JSON object) of fields, got a {type(d).__name__}"
            )
        d = dict(d)
        _no_unknown(d, {f.name for f in fields(cls)}, "the sweep spec")
        for key in ("grammars", "shapes", "data_sizes"):
            if key in d and not isinstance(d[key], list | tuple):
                raise SpecError(f"field {key!r} must be a list, got {d[key]!r}")
        grammars = []
        for i, g in enumerate(d.get("grammars") or []):
            if not isinstance(g, dict):
                raise SpecError(f"field 'grammars[{i}]' must be a table with grammar and seed")
            _no_unknown(g, {f.name for f in fields(GrammarEntry)}, f"grammars[{i}]")
            if "grammar" not in g:
                raise SpecError(f"field 'grammars[{i}].grammar' is required, e.g. \"20,300,5,10\"")
            grammars.append(GrammarEntry(**g))
        train = d.get("train") or {}
        if not isinstance(train, dict):
            raise SpecError("field 'train' must be a table of training settings")
        train = dict(train)
        eval_tokens = parse_size(d.get("eval_tokens", EVAL_TOKENS), "eval_tokens")
        if "eval_tokens" in train and train["eval_tokens"] != eval_tokens:
            # Every trial scores the top-level eval_tokens (the datasets are made for it);
            # a different value under [train] would be silently overridden.
            raise SpecError(
                f"field 'train.eval_tokens' ({train['eval_tokens']!r}) differs from the "
                f"top-level 'eval_tokens' ({eval_tokens}), which every trial uses; set "
                "eval_tokens once, at the top level"
            )
        base = preset(train.pop("preset", "cpu"))
        train_config = TrainConfig.from_dict({**base.to_dict(), **train})
        resources = d.get("resources") or {}
        if not isinstance(resources, dict):
            raise SpecError("field 'resources' must be a table of resource settings")
        _no_unknown(resources, {f.name for f in fields(Resources)}, "resources")
        for key in ("name", "shapes", "data_sizes"):
            if key not in d:
                raise SpecError(f"field {key!r} is required in a sweep spec")
        return cls(
            name=d["name"],
            grammars=tuple(grammars),
            shapes=tuple(d["shapes"]),
            data_sizes=tuple(parse_size(x, "data_sizes") for x in d["data_sizes"]),
            train=train_config,
            eval_tokens=eval_tokens,
            context_length=d.get("context_length", DEFAULT_CONTEXT_LENGTH),
            resources=Resources(**resources),
            max_failures=d.get("max_failures", 2),
            nested=d.get("nested", False),
            order=d.get("order", ORDERS[0]),
        )

    @classmethod
    def load(cls, path: str | Path) -> SweepSpec:
        path = Path(path)
        if not path.exists():
            raise PathNotFound(f"sweep spec {path} does not exist")
        text = path.read_text()
        try:
            data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
        except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
            raise SpecError(
                f"{path}: not valid {'JSON' if path.suffix == '.json' else 'TOML'}: {exc}"
            ) from None
        return cls.from_dict(data)

    def differences(self, other: dict) -> list[str]:
        """How a saved spec dict ``other`` differs from this one.

        ``other`` is read as a spec first (:func:`normalised`): a sweep.json written before
        a setting existed (``train.cooldown_fraction``, ``nested``, ``order``) has that
        setting at its default, so an old run directory still resumes."""
        return spec_differences(normalised(other), self.to_dict())

    def renamed(self, name: str) -> SweepSpec:
        return self.with_changes(name=name)

    def with_changes(self, train: dict | None = None, **changes) -> SweepSpec:
        """A copy with top-level fields ``changes`` and training settings ``train``,
        checked like any new spec (e.g. ``nested=True, train={"schedule": "wsd"}``)."""
        d = {**self.to_dict(), **changes}
        d["train"] = {**d["train"], **(train or {})}
        if "eval_tokens" in changes and "eval_tokens" not in (train or {}):
            d["train"]["eval_tokens"] = d["eval_tokens"]  # the old value is no conflict
        return SweepSpec.from_dict(d)


def normalised(d: dict) -> dict:
    """A saved spec dict as this version writes it (settings it lacks at their defaults);
    as it is when it is no longer a valid spec (the differences then say why)."""
    try:
        return SweepSpec.from_dict(d).to_dict()
    except (SpecError, TypeError, ValueError, KeyError, AttributeError):
        return d


def _no_unknown(d: dict, known: set[str], where: str) -> None:
    unknown = sorted(set(d) - known)
    if unknown:
        raise SpecError(
            f"unknown field(s) {', '.join(unknown)} in {where}; allowed: {', '.join(sorted(known))}"
        )
