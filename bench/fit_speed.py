"""Benchmark: vectorised grid fit vs a naive per-start scipy loop, on one core.

Usage::

    python bench/fit_speed.py [--quick]

Fits a 36-point (6 x 6) and a 300-point (15 x 20) synthetic data set drawn from
Chinchilla's law with 1% log-normal noise, with :func:`fit_scaling_law`
(4500-start grid) and with the naive loop (scipy L-BFGS-B from each start in
turn).  The naive loop over all 4500 starts takes about half a minute per data
set, so ``--quick`` runs it on a random subset of starts instead and
extrapolates the time linearly to 4500 starts (the JSON says so).

Also times a 200-resample bootstrap of the 36 points (goal: under a minute).
Writes ``bench/results/fit_speed.json``.  Goals: 36 points < 2 s, 300 points
< 30 s for the vectorised fit.  Exits 1 if a goal or a naive comparison fails.
"""

from __future__ import annotations

import os

# One core: must be set before numpy loads its BLAS.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import scipy  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

from gzipscale.analysis.bootstrap import bootstrap_fit  # noqa: E402
from gzipscale.analysis.fit import (  # noqa: E402
    DEFAULT_GRID,
    FitWarning,
    fit_scaling_law,
    fit_scaling_law_naive,
)
from gzipscale.analysis.law import ScalingLaw  # noqa: E402

CHINCHILLA = ScalingLaw(E=1.6934, A=406.40, B=410.72, alpha=0.33917, beta=0.28491)
GOALS_S = {36: 2.0, 300: 30.0}
BOOTSTRAP_GOAL_S = 60.0  # 200 resamples of 36 points
RESULTS = REPO / "bench" / "results" / "fit_speed.json"


def synthetic(n_sizes: int, n_tokens: int, seed: int):
    rng = np.random.default_rng(seed)
    N, D = np.meshgrid(np.geomspace(7e7, 1.6e10, n_sizes), np.geomspace(5e9, 5e11, n_tokens))
    N, D = N.ravel(), D.ravel()
    return N, D, CHINCHILLA.loss(N, D) * np.exp(rng.normal(0.0, 0.01, N.size))


def time_vectorised(N, D, L, repeats: int):
    times, fit = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        fit = fit_scaling_law(N, D, L, emit_warnings=False)
        times.append(time.perf_counter() - start)
    return times, fit


def time_naive(N, D, L, n_starts: int | None, seed: int):
    total = len(DEFAULT_GRID)
    if n_starts is None or n_starts >= total:
        subset, n_starts = None, total
    else:
        subset = np.sort(np.random.default_rng(seed).choice(total, n_starts, replace=False))
    start = time.perf_counter()
    fit = fit_scaling_law_naive(N, D, L, start_indices=subset, emit_warnings=False)
    elapsed = time.perf_counter() - start
    return elapsed, n_starts, fit


def bench_case(name, N, D, L, naive_starts, repeats):
    vec_times, vec_fit = time_vectorised(N, D, L, repeats)
    naive_s, timed_starts, naive_fit = time_naive(N, D, L, naive_starts, seed=0)
    total = len(DEFAULT_GRID)
    extrapolated = timed_starts < total
    naive_full_s = naive_s * total / timed_starts
    vec_s = float(np.median(vec_times))
    # On the full grid the two must agree; on a subset the full-grid fit can
    # only be as good or better.
    if extrapolated:
        same = vec_fit.objective <= naive_fit.objective * (1 + 1e-9)
    else:
        same = abs(vec_fit.objective - naive_fit.objective) <= 1e-9 * naive_fit.objective
    row = {
        "n_points": int(len(N)),
        "vectorised_s": [round(t, 4) for t in vec_times],
        "vectorised_median_s": round(vec_s, 4),
        "goal_s": GOALS_S.get(len(N)),
        "goal_met": bool(vec_s < GOALS_S.get(len(N), float("inf"))),
        "naive_starts_timed": int(timed_starts),
        "naive_timed_s": round(naive_s, 4),
        "naive_full_grid_s": round(naive_full_s, 4),
        "naive_extrapolated": bool(extrapolated),
        "speedup_naive_over_vectorised": round(naive_full_s / vec_s, 2),
        "objective_vectorised": vec_fit.objective,
        "objective_naive": naive_fit.objective,
        "naive_comparison": (
            "vectorised objective <= naive objective on the timed subset of starts"
            if extrapolated
            else "vectorised and naive objectives equal to 1e-9 relative"
        ),
        "naive_comparison_holds": bool(same),
        "n_batch_unconverged": int(vec_fit.n_batch_unconverged),
        "fit": {k: float(getattr(vec_fit.law, k)) for k in ("E", "A", "B", "alpha", "beta")},
    }
    print(
        f"{name:>6}: vectorised {vec_s:6.2f} s (goal {row['goal_s']} s) | naive "
        f"{naive_full_s:7.1f} s for {total} starts"
        f"{' (extrapolated from ' + str(timed_starts) + ')' if extrapolated else ''} | "
        f"ratio {row['speedup_naive_over_vectorised']:.1f}x | same optimum: {same}",
        flush=True,
    )
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="naive loop on subsets only")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore", FitWarning)

    if args.quick:
        plan = {"36pt": (synthetic(6, 6, 0), 300, 1), "300pt": (synthetic(15, 20, 1), 100, 1)}
    else:
        plan = {"36pt": (synthetic(6, 6, 0), None, 3), "300pt": (synthetic(15, 20, 1), None, 3)}
    cases = {}
    for name, ((N, D, L), naive_starts, repeats) in plan.items():
        cases[name] = bench_case(name, N, D, L, naive_starts, repeats)

    N, D, L = plan["36pt"][0]
    point = fit_scaling_law(N, D, L, emit_warnings=False)
    start = time.perf_counter()
    boot = bootstrap_fit(N, D, L, n_resamples=200, seed=0, point_fit=point)
    boot_s = time.perf_counter() - start
    bootstrap = {
        "n_points": int(len(N)),
        "n_resamples": 200,
        "seconds": round(boot_s, 4),
        "goal_s": BOOTSTRAP_GOAL_S,
        "goal_met": bool(boot_s < BOOTSTRAP_GOAL_S),
        "n_unconverged": int(boot.n_unconverged),
        "intervals_95": {k: [float(lo), float(hi)] for k, (lo, hi) in boot.intervals.items()},
    }
    print(f"bootstrap: 200 resamples of 36 points in {boot_s:.2f} s", flush=True)

    report = {
        "benchmark": "fit_scaling_law (batched L-BFGS screen + scipy polish) vs naive loop",
        "mode": "quick" if args.quick else "full",
        "threads": 1,
        "grid_starts": len(DEFAULT_GRID),
        "data": "Chinchilla law, N 7e7..1.6e10, D 5e9..5e11, log-spaced grid, 1% noise",
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "cpu_count": os.cpu_count(),
        "cases": cases,
        "bootstrap_36pt": bootstrap,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    tmp = RESULTS.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    tmp.replace(RESULTS)
    print(f"wrote {RESULTS.relative_to(REPO)}")
    ok = all(c["goal_met"] and c["naive_comparison_holds"] for c in cases.values())
    return 0 if ok and bootstrap["goal_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
