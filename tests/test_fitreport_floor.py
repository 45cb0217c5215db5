"""Both kinds of fit through the table, the report and the command: a results table with
``floor``/``floor_se`` columns (a real CSV, read back with load_points) gives a
floor-anchored and a free fit of every dataset that has a floor, ``law_choice`` picks which
drives, a table without floors gives free fits only, the FitReport survives JSON with its
kinds, floors and flags, and ``gzipscale fit`` carries all of it (``--json``, ``--law``,
and "not identified" in its text)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from builders import grid_points, run_row, write_run_dir

from gzipscale.analysis.bootstrap import BootstrapPolicy
from gzipscale.analysis.fit import ANCHORED, FREE, UnderdeterminedFit
from gzipscale.analysis.fitreport import FitReport, fit_dataset, fit_datasets
from gzipscale.analysis.identification import AT_FLOOR, BELOW_FLOOR
from gzipscale.analysis.law import ScalingLaw
from gzipscale.analysis.table import KnownFloor, load_points
from gzipscale.cli import main
from gzipscale.helpers import InputError, json_safe

FLOOR, FLOOR_SE = 0.72379, 0.00029
SMOOTH = ScalingLaw(E=FLOOR, A=50.0, B=150.0, alpha=0.4, beta=0.35)
PLATEAU = ScalingLaw(E=FLOOR, A=1.0, B=1e4, alpha=0.3, beta=1.0)
CORPUS = ScalingLaw(E=1.5, A=40.0, B=300.0, alpha=0.3, beta=0.3)
POLICY = BootstrapPolicy(resamples=10, seed=0)


def rows_of(name, law, n_grid, d_grid, *, noise, seed, gzip, floor=None, plateau_from=None):
    N, D, L = grid_points(law, n_grid, d_grid, noise, seed)
    if plateau_from is not None:  # every model at the floor from this data size on
        L = np.where(D >= plateau_from, floor, L)
        L = L * np.exp(np.random.default_rng(seed).normal(0.0, 0.0005, L.size))
    return [
        {
            "dataset": name,
            "gzip": gzip,
            "params": n,
            "tokens": d,
            "loss": x,
            "floor": np.nan if floor is None else floor,
            "floor_se": np.nan if floor is None else FLOOR_SE,
            "status": "finished",
        }
        for n, d, x in zip(N, D, L, strict=True)
    ]


def table_rows():
    """Four datasets: a smooth law with a floor, one whose runs plateau at the floor from
    262K tokens, a corpus without a floor, and one with so few runs above the floor that
    its anchored fit cannot be made."""
    n_grid, d_grid = np.geomspace(1e4, 2e6, 6), np.geomspace(1e5, 1e8, 6)
    plateau_n, plateau_d = np.geomspace(1.2e4, 4e5, 6), 2.0 ** np.arange(14, 22)
    return (
        rows_of("smooth", SMOOTH, n_grid, d_grid, noise=0.01, seed=0, gzip=0.3, floor=FLOOR)
        + rows_of(
            "plateau",
            PLATEAU,
            plateau_n,
            plateau_d,
            noise=0.0,
            seed=0,
            gzip=0.35,
            floor=FLOOR,
            plateau_from=2**18,
        )
        + rows_of("corpus", CORPUS, n_grid, d_grid, noise=0.01, seed=2, gzip=0.5)
        + rows_of(
            "starved",
            PLATEAU,
            np.array([1e4, 1e5]),
            2.0 ** np.array([14, 15, 16, 17]),
            noise=0.0,
            seed=3,
            gzip=0.4,
            floor=FLOOR,
            plateau_from=2**15,
        )
    )


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    path = tmp_path_factory.mktemp("floor-table") / "points.csv"
    pd.DataFrame(table_rows()).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def reports(table):
    points = load_points(table)
    return {
        choice: fit_datasets(points, policy=POLICY, law_choice=choice)
        for choice in (ANCHORED, FREE)
    }


# -- the table ---------------------------------------------------------------------------


def test_the_csv_carries_each_datasets_floor(table):
    points = load_points(table)
    assert points.floor("smooth") == (KnownFloor(FLOOR, FLOOR_SE), None)
    assert points.floor("corpus") == (None, None)  # empty cells: no floor
    raw = pd.read_csv(table)
    assert raw.loc[raw["dataset"] == "corpus", "floor"].isna().all()


def test_a_floor_that_differs_across_rows_is_the_median_with_a_note(tmp_path):
    rows = table_rows()[:36]
    for i, row in enumerate(rows):
        row["floor"] = (0.70, 0.72, 0.74)[i % 3]
    path = tmp_path / "t.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    known, note = load_points(path).floor("smooth")
    assert known.nats_per_token == 0.72
    assert "the floor differs across this dataset's rows (0.7 to 0.74); using the median" == note


@pytest.mark.parametrize("column, value", [("floor", 0.0), ("floor", -1.0), ("floor_se", -1e-3)])
def test_a_bad_floor_cell_is_named_with_its_column_and_row(tmp_path, column, value):
    rows = table_rows()[:36]
    rows[4][column] = value
    path = tmp_path / "t.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    with pytest.raises(InputError, match=f"row 5: column '{column}' must be a number"):
        load_points(path)


def test_a_run_directory_carries_floors_and_with_floors_sets_them(tmp_path):
    N, D, L = grid_points(SMOOTH, np.geomspace(1e4, 2e6, 6), np.geomspace(1e5, 1e8, 6))
    rows = [
        run_row("g", 0.3, n, d, float(x), floor=FLOOR, floor_se=FLOOR_SE)
        for n, d, x in zip(N, D, L, strict=True)
    ]
    rows += [run_row("h", 0.4, n, d, float(x)) for n, d, x in zip(N, D, L, strict=True)]
    points = load_points(write_run_dir(tmp_path / "run", rows))
    assert points.floor("g")[0] == KnownFloor(FLOOR, FLOOR_SE)
    assert points.floor("h")[0] is None
    set_ = points.with_floors({"h": KnownFloor(0.5, 0.0)})
    assert set_.floor("h")[0] == KnownFloor(0.5, 0.0) and points.floor("h")[0] is None
    assert set_.floor("g")[0] == KnownFloor(FLOOR, FLOOR_SE)


# -- fit_datasets --------------------------------------------------------------------------


def test_a_dataset_with_a_floor_gets_both_fits_and_the_anchored_one_drives(reports):
    report = reports[ANCHORED]
    assert report.law_choice == ANCHORED
    for name in ("smooth", "plateau"):
        drives, other = report.datasets[name], report.comparison[name]
        assert (drives.kind, other.kind) == (ANCHORED, FREE)
        assert drives.floor == other.floor == KnownFloor(FLOOR, FLOOR_SE)
        assert drives.law.E == FLOOR and other.law.E != FLOOR
        assert drives.interval("E") == (FLOOR, FLOOR)
        assert set(report.fits_of(name)) == {ANCHORED, FREE}
    smooth = report.datasets["smooth"]
    assert smooth.law.alpha == pytest.approx(SMOOTH.alpha, abs=0.03)
    assert smooth.law.beta == pytest.approx(SMOOTH.beta, abs=0.03)
    plateau = report.datasets["plateau"]
    assert plateau.left_at_floor == 24 and plateau.n_points == 24
    assert AT_FLOOR in [f.code for f in plateau.flags] and not plateau.identified
    assert BELOW_FLOOR in [f.code for f in report.comparison["plateau"].flags]


def test_a_dataset_without_a_floor_gets_the_free_fit_only(reports):
    for report in reports.values():
        corpus = report.datasets["corpus"]
        assert corpus.kind == FREE and corpus.floor is None and corpus.left_at_floor == 0
        assert "corpus" not in report.comparison and "corpus" not in report.comparison_skipped
        assert report.fits_of("corpus") == {FREE: corpus}
        assert not any(f.code in (AT_FLOOR, BELOW_FLOOR) for f in corpus.flags)


def test_law_choice_swaps_which_fit_drives(reports):
    floor, free = reports[ANCHORED], reports[FREE]
    assert free.law_choice == FREE
    for name in ("smooth", "plateau"):
        assert free.datasets[name].kind == FREE and free.comparison[name].kind == ANCHORED
        # The same two fits, swapped.
        assert free.datasets[name].law == floor.comparison[name].law
        assert free.comparison[name].law == floor.datasets[name].law
        assert free.datasets[name].to_dict() == floor.comparison[name].to_dict()
    # The regression runs on the driving fits (the starved dataset drives only when free).
    assert floor.regression.names == ["smooth", "plateau", "corpus"]
    assert free.regression.names == ["smooth", "plateau", "corpus", "starved"]


def test_an_anchored_fit_that_cannot_be_made_is_said_why(reports):
    """Only two runs lie above the floor: the anchored fit is underdetermined; where it
    drives the dataset is skipped (its free fit kept for comparison), where the free fit
    drives the anchored one is in comparison_skipped."""
    floor, free = reports[ANCHORED], reports[FREE]
    reason = floor.skipped["starved"]
    assert reason.startswith(
        "floor fit: every model reaches the floor by 32.8K tokens (6 of 8 runs have an "
        "excess loss under 1% of the floor 0.7238): this grid cannot measure the D term"
    )
    assert "Left: cannot fit L(N, D): need at least 5 points for 4 parameters, got 2" in reason
    assert "starved" not in floor.datasets and floor.comparison["starved"].kind == FREE
    assert free.datasets["starved"].kind == FREE
    assert free.comparison_skipped["starved"] == reason
    assert "starved" not in free.skipped


def test_a_table_without_floors_gives_free_fits_and_no_comparison(tmp_path):
    rows = [r for r in table_rows() if r["dataset"] in ("smooth", "corpus")]
    for row in rows:
        del row["floor"], row["floor_se"]
    path = tmp_path / "no_floors.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    assert "floor" not in pd.read_csv(path).columns
    for choice in (ANCHORED, FREE):
        report = fit_datasets(load_points(path), policy=BootstrapPolicy(0), law_choice=choice)
        assert {d.kind for d in report.datasets.values()} == {FREE}
        assert report.comparison == {} and report.comparison_skipped == {}
        assert report.law_choice == choice
        assert all(d.floor is None for d in report.datasets.values())


def test_fit_dataset_refuses_what_it_cannot_do(table):
    points = load_points(table)
    with pytest.raises(UnderdeterminedFit, match="corpus has no floor"):
        fit_dataset("corpus", points, policy=BootstrapPolicy(0), kind=ANCHORED)
    with pytest.raises(ValueError, match="kind must be one of floor, free"):
        fit_dataset("smooth", points, kind="anchored")
    with pytest.raises(ValueError, match="law_choice must be one of floor, free"):
        fit_datasets(points, law_choice="both")


def test_the_report_round_trips_through_json_with_kinds_floors_and_flags(reports):
    for report in reports.values():
        data = json.loads(json.dumps(json_safe(report.to_dict()), allow_nan=False))
        back = FitReport.from_dict(data)
        assert back.law_choice == report.law_choice
        assert back.comparison_skipped == report.comparison_skipped
        for fits, back_fits in (
            (report.datasets, back.datasets),
            (report.comparison, back.comparison),
        ):
            assert set(back_fits) == set(fits)
            for name, fit in fits.items():
                again = back_fits[name]
                assert (again.kind, again.floor, again.flags) == (fit.kind, fit.floor, fit.flags)
                assert again.left_at_floor == fit.left_at_floor
                assert again.identified == fit.identified and again.verdict == fit.verdict
                assert again.law == fit.law
        assert json.loads(json.dumps(json_safe(back.to_dict()), allow_nan=False)) == data


# -- gzipscale fit -------------------------------------------------------------------------


def codes_of(fit: dict) -> list[str]:
    return [f["code"] for f in fit["flags"]]


def test_cli_fit_json_default_is_the_anchored_fit(table):
    """The installed command, as a user runs it."""
    proc = subprocess.run(
        [sys.executable, "-m", "gzipscale", "fit", str(table), "--json", "--bootstrap", "5"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["law_choice"] == "floor"
    assert data["datasets"]["smooth"]["kind"] == "floor"
    assert data["datasets"]["smooth"]["floor"] == {"nats_per_token": FLOOR, "stderr": FLOOR_SE}
    assert data["comparison"]["smooth"]["kind"] == "free"
    plateau = data["datasets"]["plateau"]
    assert AT_FLOOR in codes_of(plateau) and plateau["identified"] is False
    assert plateau["left_at_floor"] == 24
    assert BELOW_FLOOR in codes_of(data["comparison"]["plateau"])
    assert data["datasets"]["corpus"]["kind"] == "free" and "corpus" not in data["comparison"]
    assert data["skipped"]["starved"].startswith("floor fit: ")


def test_cli_fit_json_law_free(table, capsys):
    assert main(["fit", str(table), "--json", "--law", "free", "--bootstrap", "5"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["law_choice"] == "free"
    assert {n: d["kind"] for n, d in data["datasets"].items()} == {
        "smooth": "free",
        "plateau": "free",
        "corpus": "free",
        "starved": "free",
    }
    assert {n: d["kind"] for n, d in data["comparison"].items()} == {
        "smooth": "floor",
        "plateau": "floor",
    }
    assert BELOW_FLOOR in codes_of(data["datasets"]["plateau"])
    assert AT_FLOOR in codes_of(data["comparison"]["plateau"])
    assert data["comparison_skipped"]["starved"].startswith("floor fit: ")
    for fit in [*data["datasets"].values(), *data["comparison"].values()]:
        assert fit["identified"] == (fit["flags"] == [])
        assert all(set(f) == {"code", "sentence"} for f in fit["flags"])


def test_cli_fit_rejects_an_unknown_law(table, capsys):
    with pytest.raises(SystemExit) as info:
        main(["fit", str(table), "--law", "anchored"])
    assert info.value.code == 2
    assert "invalid choice: 'anchored'" in capsys.readouterr().err


def test_cli_fit_text_says_not_identified_for_a_flagged_fit(table, capsys):
    assert main(["fit", str(table), "--bootstrap", "0"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "E at the floor (drives)" in text and "free (paper)" in text
    assert (
        "E at the floor: not identified: every model reaches the floor by 262K tokens "
        "(24 of 48 runs have an excess loss under 1% of the floor 0.7238)"
    ) in text
    assert "free (paper): not identified: the free fit's E = " in text
    assert "E at the floor: identified (no flag raised)" in text  # the smooth dataset
    assert "skipped starved: floor fit: every model reaches the floor by 32.8K tokens" in text
    assert "not shown: law not identified" in text  # the plateau's frontier
