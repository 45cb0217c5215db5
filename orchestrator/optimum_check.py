"""``gzipscale optimum RUN_DIR``: train the model a fitted law calls compute-optimal, and one
on each side of it, at a compute budget the sweep did not train, and say which won.

For each dataset of a finished sweep whose floor-anchored law is identified, the budget
is the one at which the law's optimal model is an interior shape of the tiny family
(:func:`~gzipscale.analysis.optimum.budget_at`), the largest such budget whose three runs
(``D = C / 6N``) fit in the sweep's dataset and are at least ``min_steps`` long.  The
three runs are trained exactly as the sweep's runs were (its train settings, one
independent run each), on up to ``workers`` processes, each in its own resumable run
directory under ``RUN_DIR/optimum/``; the outcome goes to ``RUN_DIR/optimum.json``,
which ``gzipscale report --reproduction`` reads.
"""

from __future__ import annotations

import json
import math
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from gzipscale.analysis.bootstrap import BootstrapPolicy
from gzipscale.analysis.fit import UnderdeterminedFit
from gzipscale.analysis.fitreport import fit_dataset
from gzipscale.analysis.optimum import (
    OPTIMUM_FILE,
    OptimumCheck,
    OptimumOutcome,
    budget_at,
    judge_optimum,
    plan_optimum_check,
)
from gzipscale.analysis.table import load_points
from gzipscale.helpers import InputError, PathNotFound, atomic_write_bytes
from gzipscale.vocabulary import FLOOR_FIT, RESULTS_FILE, SWEEP_SPEC_FILE

OPTIMUM_DIR = "optimum"


def shape_family(vocab: int) -> dict[str, int]:
    """The tiny shapes and their parameter counts at ``vocab``."""
    from gzipscale.trainers.shapes import TINY_SHAPES

    return {s.name: s.params(vocab) for s in TINY_SHAPES}


def choose_check(
    dataset: str, law, family: dict[str, int], *, max_tokens: int, min_tokens: int, context: int
) -> OptimumCheck:
    """The largest budget whose optimum is an interior shape and whose three runs fit the
    dataset (module doc).  Raises ValueError when no budget does."""
    names = sorted(family, key=family.get)
    reasons = []
    for name in reversed(names[1:-1]):
        budget = budget_at(law, family[name])
        if not (math.isfinite(budget) and budget > 0):
            reasons.append(f"{name}: no budget")
            continue
        try:
            check = plan_optimum_check(dataset, law, budget, family, context_length=context)
        except ValueError as exc:
            reasons.append(f"{name}: {exc}")
            continue
        sizes = [c.tokens for c in check.candidates]
        if max(sizes) <= max_tokens and min(sizes) >= min_tokens:
            return check
        reasons.append(
            f"{name}: runs of {min(sizes):,}-{max(sizes):,} tokens, outside "
            f"{min_tokens:,}-{max_tokens:,}"
        )
    raise ValueError("no budget fits: " + "; ".join(reasons))


def _train_one(job: dict) -> float:
    """One candidate in its own process: returns its held-out loss (NaN if it failed)."""
    import torch

    from gzipscale.trainers.run_dir import prepare_run_dir, write_result
    from gzipscale.trainers.session import LocalSession
    from gzipscale.trainers.train import RunSpec, train_run

    torch.set_num_threads(1)
    spec = RunSpec.from_dict(job["spec"])
    run_dir = Path(job["dir"])
    done = prepare_run_dir(run_dir, spec)
    if done is not None:
        return float(done["val_loss"]) if done.get("status") == "finished" else math.nan
    result = train_run(spec, session=LocalSession(run_dir, keep=1))
    write_result(run_dir, result)
    return float(result.val_loss) if result.ok else math.nan


def run_optimum_check(
    run_dir: str | Path,
    *,
    datasets: list[str] | None = None,
    workers: int = 2,
    policy: BootstrapPolicy,
    min_steps: int = 128,
    say=print,
) -> OptimumOutcome:
    """Plan, train and judge the check for every (or each named) dataset; writes
    ``RUN_DIR/optimum.json`` atomically and returns the outcome."""
    from gzipscale.orchestrator.spec import SweepSpec
    from gzipscale.trainers.train import RunSpec

    run_dir = Path(run_dir)
    if not (run_dir / RESULTS_FILE).is_file() or not (run_dir / SWEEP_SPEC_FILE).is_file():
        raise PathNotFound(f"{run_dir} is not a sweep's run directory (no results.csv/sweep.json)")
    spec = SweepSpec.from_dict(json.loads((run_dir / SWEEP_SPEC_FILE).read_text("utf-8")))
    config = spec.train
    points = load_points(run_dir)
    names = points.names
    if datasets:
        unknown = sorted(set(datasets) - set(names))
        if unknown:
            raise InputError(
                f"field 'dataset': {', '.join(unknown)} not in {run_dir} "
                f"(its datasets: {', '.join(names)})"
            )
        names = [n for n in names if n in datasets]
    vocab = config.vocab_size or max(int(g.spec.terminals) + 1 for g in spec.grammars)
    family = shape_family(vocab)
    min_tokens = min_steps * config.batch_size * spec.context_length
    outcome = OptimumOutcome()
    jobs: list[tuple[OptimumCheck, list[dict]]] = []
    for name in names:
        try:
            fit = fit_dataset(name, points, policy=policy, kind=FLOOR_FIT)
        except (UnderdeterminedFit, RuntimeError, InputError) as exc:
            outcome.skipped[name] = f"no floor-anchored fit: {exc}"
            continue
        if fit.flags:
            outcome.skipped[name] = f"its law is not identified: {fit.verdict}"
            continue
        data = run_dir / "data" / name
        try:
            tokens = int(json.loads((data / "manifest.json").read_text("utf-8"))["tokens"])
            check = choose_check(
                name,
                fit.law,
                family,
                max_tokens=tokens,
                min_tokens=min_tokens,
                context=spec.context_length,
            )
        except (OSError, KeyError, ValueError) as exc:
            outcome.skipped[name] = str(exc)
            continue
        specs = []
        for c in check.candidates:
            run = RunSpec(str(data), c.shape, c.tokens, config)
            where = run_dir / OPTIMUM_DIR / name / f"{c.shape}-{c.tokens}"
            specs.append({"spec": run.to_dict(), "dir": str(where)})
        jobs.append((check, specs))
        say(
            f"optimum {name}: budget {check.budget:.3g} FLOPs, law's N_opt "
            f"{check.n_opt:,.0f}; training "
            + ", ".join(f"{c.shape} on {c.tokens:,} tokens" for c in check.candidates)
        )
    flat = [s for _, specs in jobs for s in specs]
    if flat:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=max(1, workers), mp_context=context) as pool:
            losses = list(pool.map(_train_one, flat))
    else:
        losses = []
    i = 0
    for check, specs in jobs:
        observed = {c.shape: losses[i + k] for k, c in enumerate(check.candidates)}
        i += len(specs)
        judged = judge_optimum(check, observed)
        outcome.checks.append(judged)
        best = judged.observed_best
        say(
            f"optimum {check.dataset}: law's best {judged.predicted_best.shape}, measured best "
            f"{best.shape if best else 'unknown (a run failed)'}"
        )
    payload = json.dumps(outcome.to_dict(), indent=2) + "\n"
    atomic_write_bytes(run_dir / OPTIMUM_FILE, payload.encode("utf-8"))
    return outcome


def cmd_optimum(args) -> int:
    from gzipscale.helpers import console

    out = console(stderr=False)
    outcome = run_optimum_check(
        args.run_dir,
        datasets=args.dataset,
        workers=args.workers,
        policy=BootstrapPolicy(args.bootstrap, args.seed),
        min_steps=args.min_steps,
        say=out.print,
    )
    for name, why in outcome.skipped.items():
        out.print(f"optimum {name}: no check: {why}")
    out.print(f"wrote {Path(args.run_dir) / OPTIMUM_FILE}")
    failed = [c for c in outcome.checks if c.holds is None]
    return 1 if failed or not outcome.checks else 0
