"""Where can you trust mean-field VI? A map of its posterior sds against NUTS's,
with the PSIS k-hat and linear-response (LRVB) sds, over separation x N x D.

For each cell (separation: the least distance allowed between centres, in component sds; N
points; D features; K = 3) and each data seed: the truth
``gmm.data.random_mixture(3, D, separation=..., seed=data_seed)`` and N points
from it (``sample(N, seed=data_seed)``); a default diagonal model with Dirichlet
weights (``gmm.BayesianGMM(3, D, dtype=tf.float64)``, default priors) fitted by
``gmm.fit`` to convergence (tol 1e-6); its mean-field posterior sds
(``model.posterior()``); the linear-response sds (``gmm.linear_response``); NUTS
(``gmm.mcmc.sample``, 4 chains, every chain started in the fit's labelling, its
draws then relabelled draw by draw to the fit's means); and the PSIS k-hat of q
(``gmm.psis.psis_khat``, S = 2,000 draws). Times: the fit, the linear response,
NUTS (compilation included: the first cell of each (N, D) compiles), PSIS.

NUTS is the reference only where it converged: rank-normalised R-hat <= 1.01
and bulk ESS >= 400 for every mean, sd and weight (R-hat and bulk ESS are
rank-based, so those of the sds are those of the precisions); a cell that fails
is marked "NUTS not converged" and left out of the figure's ratios. The share of
draws that another labelling matched better than the fit's is recorded too
(notebook 04: where it is not 0, draw-by-draw relabelling is unreliable).

Per (cell, seed) the ratios sd / NUTS sd, for mean-field and LRVB, are
summarised over the parameters: "main" is the means and the weights together,
"precisions" the precisions; "median" is the median ratio, "worst" the ratio
farthest from 1 (in log), "min" and "max" the extremes.

Resumable: each finished (cell, seed) is one JSON line in
benchmarks/results/lr_map.jsonl; a rerun skips those already there (a line
without LRVB is redone once ``gmm.linear_response`` exists). The table is
written to benchmarks/results/lr_map.txt and the figure to
benchmarks/results/lr_map.png (chapter 11 draws it as figures/11_trust_map.png).

    PYTHONPATH=. python benchmarks/lr_map.py   # the committed grid (see GRID), from the repo root
    python benchmarks/lr_map.py --quick    # separation 1 and 3, N 100 and 1,000, D 2, one seed
    python benchmarks/lr_map.py --table-only   # rewrite the table and figure from the JSON lines
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import gmm  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "lr_map.jsonl"
TABLE = ROOT / "benchmarks" / "results" / "lr_map.txt"
# The chapter draws the same figure (draw_map) as figures/11_trust_map.png; the script's
# copy goes beside its table, so a benchmark run never replaces the notebook's figure
# (tests/test_figures.py checks that each figure in figures/ is its notebook's).
FIGURE = ROOT / "benchmarks" / "results" / "lr_map.png"

K = 3
# The committed grid: separation 1-4 x N 100, 1,000, 10,000 x D 2, 5, 10, data seeds 0
# and 1 (72 (cell, seed) pairs), listed in blocks from cheap to dear so that an
# interrupted run leaves the small cells done (the N = 10,000 block runs separation
# 4 first: its NUTS is the slowest where the clusters overlap). The table's "cut" line
# lists the pairs of this grid that have no line yet.
GRID = (
    ((1.0, 2.0, 3.0, 4.0), (100, 1000), (2, 5), (0, 1)),
    ((1.0, 2.0, 3.0, 4.0), (100, 1000), (10,), (0, 1)),
    ((4.0, 3.0, 2.0, 1.0), (10_000,), (2, 5, 10), (0, 1)),
)
QUICK = (((1.0, 3.0), (100, 1000), (2,), (0,)),)
NUTS_SETTINGS = {"num_chains": 4, "num_results": 500, "num_burnin": 300, "max_tree_depth": 6}
# Where those chains miss the convergence bar without switching labels, NUTS runs once more
# with these longer chains (the maximum R-hat over 3 x (2D + 1) parameters is noisy at 500
# draws per chain); the row records the draws per chain it kept.
NUTS_LONGER = dict(NUTS_SETTINGS, num_results=2000, num_burnin=500)
RHAT_MAX, ESS_MIN = 1.01, 400
# Above this share of draws matched better by another labelling, NUTS crossed between
# label modes: the relabelled draws are a doubtful reference (notebook 04).
SWITCHED = 0.01
PSIS_DRAWS = 2000
FIT_TOL = 1e-6
KEYS = ("locs", "precisions", "weights")


def cell_key(separation: float, n: int, d: int, data_seed: int) -> str:
    return f"sep={separation:g} N={n} D={d} seed={data_seed}"


def make_data(separation: float, n: int, d: int, data_seed: int) -> np.ndarray:
    """The cell's data: N points of a random 3-component mixture in D dimensions."""
    truth = gmm.data.random_mixture(K, d, separation=separation, seed=data_seed)
    return truth.sample(n, seed=data_seed)[0]


def mean_field_sds(model) -> dict:
    """q's posterior sds in data units, keyed like ``model.posterior()``."""
    return {key: dist.stddev().numpy() for key, dist in model.posterior().items()}


def nuts_sds(draws) -> dict:
    """NUTS's posterior sds of the relabelled draws, data units."""
    axes = (0, 1)
    return {
        "locs": draws.locs.std(axes),
        "precisions": draws.precisions.std(axes),
        "weights": draws.weights.std(axes),
    }


def summarise(ratios: dict) -> dict:
    """Median, worst (farthest from 1 in log), min and max of sd ratios, over the
    means and weights ("main") and over the precisions."""
    groups = {
        "main": np.concatenate([ratios["locs"].ravel(), ratios["weights"].ravel()]),
        "precisions": ratios["precisions"].ravel(),
    }
    out = {}
    for name, values in groups.items():
        worst = values[np.argmax(np.abs(np.log(values)))]
        out[name] = {
            "median": float(np.median(values)),
            "worst": float(worst),
            "min": float(values.min()),
            "max": float(values.max()),
        }
    return out


def linear_response_sds(model, X):
    """LRVB sds (data units) and seconds, or (None, None) before gmm has it."""
    if not hasattr(gmm, "linear_response"):
        return None, None
    start = time.perf_counter()
    result = gmm.linear_response(model, X)
    return {key: np.asarray(result.sds[key]) for key in KEYS}, time.perf_counter() - start


def run_cell(
    separation: float, n: int, d: int, data_seed: int, previous=None, longer: bool = False
) -> dict:
    """One (cell, seed). With ``previous`` (its row without LRVB), the fit is
    redone (deterministic: seed 0) and LRVB added; NUTS and PSIS are kept.
    NUTS runs with ``NUTS_SETTINGS``, and again with ``NUTS_LONGER`` where it
    missed the bar without switching labels; ``longer``: with the longer chains
    only (a row from before the retry existed)."""
    X = make_data(separation, n, d, data_seed)
    model = gmm.BayesianGMM(K, d, dtype=tf.float64)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", gmm.ConvergenceWarning)  # recorded as stop_reason
        history = gmm.fit(model, X, tol=FIT_TOL, seed=0, progress=False)
    fit_s = time.perf_counter() - start
    mean_field = mean_field_sds(model)
    lr, lr_s = linear_response_sds(model, X)
    if previous is not None:
        reference = {k: np.asarray(previous["sds"]["nuts"][k]) for k in KEYS}
        row = dict(previous, fit_s=fit_s, lr_s=lr_s)
        row["lr"] = None if lr is None else summarise({k: lr[k] / reference[k] for k in KEYS})
        lr_lists = None if lr is None else {k: lr[k].tolist() for k in KEYS}
        row["sds"] = dict(previous["sds"], lr=lr_lists)
        return row
    pivot = model.posterior_parameters()["loc_mean"]
    nuts_s = 0.0
    for settings in (NUTS_SETTINGS, NUTS_LONGER)[1 if longer else 0 :]:
        draws = gmm.mcmc.sample(model, X, shuffle_labels=False, seed=data_seed, **settings)
        nuts_s += draws.wall_time_s
        switched = gmm.evaluate.switching_rate(
            gmm.evaluate.alignment_permutations(pivot, draws.locs)
        )
        draws = draws.relabelled(pivot)
        found = draws.diagnostics()
        max_rhat = float(max(np.nanmax(v) for v in found["r_hat"].values()))
        min_ess = float(min(np.nanmin(v) for v in found["ess_bulk"].values()))
        converged = max_rhat <= RHAT_MAX and min_ess >= ESS_MIN
        if converged or switched > SWITCHED:
            break
    reference = nuts_sds(draws)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # ArviZ's Pareto fit on a degenerate tail
        khat = gmm.psis.psis_khat(model, X, n_draws=PSIS_DRAWS, seed=0).khat
    psis_s = time.perf_counter() - start
    row = {
        "key": cell_key(separation, n, d, data_seed),
        "separation": separation,
        "n": n,
        "d": d,
        "data_seed": data_seed,
        "fit_steps": history.steps,
        "fit_stop": history.stop_reason,
        "fit_s": fit_s,
        "lr_s": lr_s,
        "nuts_s": nuts_s,
        "nuts_results": settings["num_results"],
        "psis_s": psis_s,
        "nuts_max_rhat": max_rhat,
        "nuts_min_ess_bulk": min_ess,
        "nuts_divergences": int(draws.divergences.sum()),
        "nuts_switched": float(switched),
        "nuts_converged": bool(converged),
        "khat": float(khat),
        "mean_field": summarise({k: mean_field[k] / reference[k] for k in KEYS}),
        "lr": None if lr is None else summarise({k: lr[k] / reference[k] for k in KEYS}),
        "sds": {
            "nuts": {k: reference[k].tolist() for k in KEYS},
            "mean_field": {k: mean_field[k].tolist() for k in KEYS},
            "lr": None if lr is None else {k: lr[k].tolist() for k in KEYS},
        },
    }
    return row


def needs_longer_chains(row: dict) -> bool:
    """A row from before the longer-chain retry whose NUTS missed the bar without
    switching labels: a rerun redoes it with ``NUTS_LONGER``."""
    return (
        "nuts_results" not in row and not row["nuts_converged"] and row["nuts_switched"] <= SWITCHED
    )


def read_rows(path: Path) -> dict:
    rows = {}
    if path.exists():
        for text in path.read_text().splitlines():
            if text.strip():
                row = json.loads(text)
                rows[row["key"]] = row  # a later line (a redo) replaces an earlier one
    return rows


def cells(grid: tuple):
    for separations, sizes, dims, data_seeds in grid:
        for d in dims:
            for n in sizes:
                for separation in separations:
                    for data_seed in data_seeds:
                        yield separation, n, d, data_seed


def fmt(value, spec=".2f") -> str:
    missing = value is None or (isinstance(value, float) and math.isnan(value))
    return "-" if missing else format(value, spec)


def status(row: dict) -> str:
    if not row["nuts_converged"]:
        return "NUTS not converged"
    if row["nuts_switched"] > SWITCHED:
        return "converged, labels switched"
    return "converged"


def table_lines(rows: list) -> list:
    head = (
        f"{'sep':>4} {'N':>6} {'D':>3} {'seed':>4} | {'MF/NUTS med':>11} {'worst':>6} "
        f"{'prec worst':>10} | {'LR/NUTS med':>11} {'worst':>6} {'prec worst':>10} | "
        f"{'k-hat':>6} | {'draws':>5} {'R-hat':>6} {'ESS':>6} {'switch':>6} | "
        f"{'fit s':>6} {'LR s':>6} {'NUTS s':>7} | NUTS"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        mf, lr = r["mean_field"], r["lr"] or {"main": {}, "precisions": {}}
        lines.append(
            f"{r['separation']:>4g} {r['n']:>6} {r['d']:>3} {r['data_seed']:>4} | "
            f"{fmt(mf['main']['median']):>11} {fmt(mf['main']['worst']):>6} "
            f"{fmt(mf['precisions']['worst']):>10} | "
            f"{fmt(lr['main'].get('median')):>11} {fmt(lr['main'].get('worst')):>6} "
            f"{fmt(lr['precisions'].get('worst')):>10} | "
            f"{fmt(r['khat']):>6} | {r.get('nuts_results', NUTS_SETTINGS['num_results']):>5} "
            f"{r['nuts_max_rhat']:>6.3f} {r['nuts_min_ess_bulk']:>6.0f} "
            f"{r['nuts_switched']:>6.2f} | {r['fit_s']:>6.1f} {fmt(r['lr_s'], '.1f'):>6} "
            f"{r['nuts_s']:>7.1f} | {status(r)}"
        )
    return lines


def draw_map(rows: list):
    """The map as a matplotlib figure of three panels: the worst mean-field ratio
    (means and weights) by separation, against k-hat, and the worst LRVB ratio
    against it; (cell, seed) pairs where NUTS did not converge are left out, and
    those where its draws visited other labellings are drawn hollow."""
    import matplotlib.pyplot as plt

    good = [r for r in rows if r["nuts_converged"]]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    colors = dict(zip(sorted({r["n"] for r in rows}), gmm.plotting.colors(3)))
    markers = {2: "o", 5: "s", 10: "^"}
    for r in good:
        jitter = 0.06 * (r["data_seed"] - 0.5) + 0.04 * (math.log10(r["n"]) - 3)
        style = {"color": colors[r["n"]], "marker": markers.get(r["d"], "o"), "ls": "none", "ms": 5}
        if r["nuts_switched"] > SWITCHED:  # hollow: the relabelled reference is unreliable
            style["markerfacecolor"] = "none"
        axes[0].plot(r["separation"] + jitter, r["mean_field"]["main"]["worst"], **style)
        axes[1].plot(r["khat"], r["mean_field"]["main"]["worst"], **style)
        if r["lr"] is not None:
            axes[2].plot(r["mean_field"]["main"]["worst"], r["lr"]["main"]["worst"], **style)
    for n, color in colors.items():
        axes[0].plot([], [], "o", color=color, label=f"N = {n:,}")
    for d, marker in markers.items():
        if any(r["d"] == d for r in rows):
            axes[0].plot([], [], marker, color="grey", label=f"D = {d}")
    axes[0].legend(frameon=False, fontsize="small")
    axes[0].set(
        xlabel="separation (least distance allowed between centres, sds)",
        ylabel="mean-field sd / NUTS sd, worst",
        title="where mean-field fails",
    )
    axes[1].axvline(0.7, color="black", lw=1, ls=":")
    axes[1].set(
        xlabel="PSIS k-hat of q",
        ylabel="mean-field sd / NUTS sd, worst",
        title="does k-hat predict it?",
    )
    axes[2].set(
        xlabel="mean-field sd / NUTS sd, worst",
        ylabel="LRVB sd / NUTS sd, worst",
        title="does linear response repair it?",
    )
    for ax in axes:
        ax.axhline(1, color="black", lw=1, ls="--")
        ax.set_yscale("log")
    axes[2].set_xscale("log")
    fig.suptitle(
        f"means and weights: {len(good)} of {len(rows)} (cell, seed) pairs with NUTS converged",
        fontsize="medium",
    )
    fig.tight_layout()
    return fig


def write_figure(rows: list, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gmm.plotting.set_theme()
    fig = draw_map(rows)
    gmm.plotting.set_figure_dir(path.parent)
    gmm.plotting.savefig(path.stem, fig)
    plt.close(fig)


def write_table(rows: list, path: Path, *, command: str, wall_s: float, cut: str) -> None:
    rows = sorted(rows, key=lambda r: (r["d"], r["n"], r["separation"], r["data_seed"]))
    load = os.getloadavg() if hasattr(os, "getloadavg") else (math.nan,) * 3
    lines = [
        "Mean-field VI's posterior sds against NUTS's, the PSIS k-hat of q, and the",
        "linear-response (LRVB) sds: K = 3, default diagonal model (Dirichlet weights,",
        "default priors, float64),",
        f"gmm.fit to convergence (tol {FIT_TOL:g}); NUTS {NUTS_SETTINGS}, chains started in the",
        f"fit's labelling, draws relabelled to the fit's means; PSIS S = {PSIS_DRAWS}. Where those",
        "chains missed the bar below without switching labels, NUTS ran again with",
        f"{NUTS_LONGER['num_results']} draws per chain after {NUTS_LONGER['num_burnin']} "
        "adaptation steps ('draws': per chain, of the run kept).",
        f"NUTS converged: rank-normalised R-hat <= {RHAT_MAX} and bulk ESS >= {ESS_MIN} for every",
        "mean, sd and weight. 'switch': share of draws another labelling matched better;",
        f"above {SWITCHED} the cell is marked 'labels switched' (a doubtful reference).",
        "Ratios sd / NUTS sd: 'med' the median and 'worst' the one farthest from 1, over the",
        "means and weights; 'prec worst' over the precisions. Times: seconds, NUTS's with its",
        "compilation (the first cell of each (N, D) compiles).",
        "",
        f"command: {command}",
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}, "
        f"Python {platform.python_version()}, TensorFlow {tf.__version__}",
        f"load average at the end (1, 5, 15 min): {load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f}",
        f"wall time of this run: {wall_s:.0f} s (cells already in the JSON lines skipped); "
        f"sum over the lines of fit, LRVB, NUTS and PSIS seconds: {cell_seconds(rows):.0f} s",
        f"cut: {cut}",
        "",
        *table_lines(rows),
        "",
        *summary_lines(rows),
    ]
    path.write_text("\n".join(lines) + "\n")


def cell_seconds(rows: list) -> float:
    parts = ("fit_s", "lr_s", "nuts_s", "psis_s")
    return float(sum(r[part] or 0.0 for r in rows for part in parts))


def summary_lines(rows: list) -> list:
    good = [r for r in rows if status(r) == "converged"]
    out = [
        f"(cell, seed) pairs: {len(rows)}; NUTS converged in "
        f"{sum(r['nuts_converged'] for r in rows)}, of which {len(good)} without label "
        "switching; the counts below are over those."
    ]
    if not good:
        return out
    mf_bad = [r for r in good if not 0.7 <= r["mean_field"]["main"]["worst"] <= 1.3]
    out.append(f"mean-field worst ratio outside 0.7-1.3 in {len(mf_bad)} of {len(good)}.")
    flagged = [r for r in good if r["khat"] > 0.7]
    both = [r for r in mf_bad if r["khat"] > 0.7]
    out.append(
        f"k-hat > 0.7 in {len(flagged)} of {len(good)}; of the {len(mf_bad)} where mean-field is "
        f"outside 0.7-1.3, {len(both)} have k-hat > 0.7."
    )
    with_lr = [r for r in good if r["lr"] is not None]
    if with_lr:
        lr_ok = [r for r in with_lr if 0.9 <= r["lr"]["main"]["worst"] <= 1.1]
        repaired = [
            r for r in mf_bad if r["lr"] is not None and 0.9 <= r["lr"]["main"]["worst"] <= 1.1
        ]
        out.append(
            f"LRVB worst ratio within 0.9-1.1 in {len(lr_ok)} of {len(with_lr)}; "
            f"where mean-field is outside 0.7-1.3: {len(repaired)} of "
            f"{sum(r['lr'] is not None for r in mf_bad)}."
        )
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small grid for a laptop")
    parser.add_argument("--results", type=Path, default=RESULTS, help="the JSON lines file")
    parser.add_argument("--table", type=Path, default=TABLE)
    parser.add_argument("--figure", type=Path, default=FIGURE)
    parser.add_argument("--table-only", action="store_true", help="no new cells")
    parser.add_argument("--only", help="run one cell, e.g. 'sep=2 N=1000 D=2 seed=0'")
    parser.add_argument(
        "--fill-lr", action="store_true", help="only add LRVB to the lines that lack it"
    )
    args = parser.parse_args(argv)
    grid = QUICK if args.quick else GRID
    command = "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])])
    start = time.perf_counter()
    args.results.parent.mkdir(parents=True, exist_ok=True)
    done = read_rows(args.results)
    todo = [c for c in cells(grid) if args.only is None or cell_key(*c) == args.only]
    for cell in [] if args.table_only else todo:
        key = cell_key(*cell)
        retry = key in done and needs_longer_chains(done[key])
        if retry and not args.fill_lr:
            row = run_cell(*cell, longer=True)
        elif key in done and (done[key]["lr"] is not None or not hasattr(gmm, "linear_response")):
            continue
        elif args.fill_lr and key not in done:
            continue
        else:
            row = run_cell(*cell, previous=done.get(key))
        with args.results.open("a") as f:
            f.write(json.dumps(row) + "\n")
        done[key] = row
        print(table_lines([row])[-1], flush=True)
    keys = {cell_key(*c) for c in cells(grid)}
    rows = [r for k, r in done.items() if k in keys]
    missing = [k for k in (cell_key(*c) for c in cells(grid)) if k not in done]
    cut = f"{len(missing)} of {len(keys)} pairs not run" + (
        f": {'; '.join(missing)}" if missing else ""
    )
    if args.quick:
        cut = "the --quick grid; " + cut
    write_table(rows, args.table, command=command, wall_s=time.perf_counter() - start, cut=cut)
    write_figure(rows, args.figure)
    print(f"wrote {args.table} and {args.figure}")


if __name__ == "__main__":
    main()
