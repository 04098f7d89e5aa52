"""Speed and memory of prediction: gmm's exact posterior predictive
(``score_samples``, ``predict_proba``) against a plain vectorised NumPy/SciPy
evaluation of the same exact densities, written here.

Cases: the diagonal model at K = 3, D = 2 (N = 1e6 points) and K = D = 10, and
the full-covariance model's ``predict_proba`` at both sizes. Each measurement
runs in a fresh subprocess: it loads a model saved by the parent, draws the
points, warms up on 1,000 of them, then times ``--repeats`` calls (median)
and reports the peak extra resident memory of those calls (VmHWM after minus
VmRSS before, MB; tracemalloc does not see TensorFlow's or NumPy's C buffers
reliably). The reference for the diagonal model: q's predictive factor
E_mu[Student-t(x; mu, 2a, sqrt(b/a))], mu ~ N(m, s^2), by 40-point
Gauss-Hermite in mu, all points at once (exact to ~1e-10 when s is small against
the Student-t's scale, as for these fits; the script prints the largest
difference to gmm's); for the full model, ``scipy.stats.multivariate_t.logpdf``
per component on all points at once.

    python benchmarks/prediction.py            # writes benchmarks/results/prediction.txt
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import numpy as np  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "prediction.txt"
ROOT = Path(__file__).resolve().parent.parent


def memory_mb(field: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise OSError(f"no {field} in /proc/self/status")


def points_for(k: int, d: int, n: int, seed: int) -> np.ndarray:
    """``n`` points of a K-cluster mixture in D dimensions (unit sds, centres 4 apart)."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(0).normal(0, 4, size=(k, d))
    return centres[rng.integers(k, size=n)] + rng.normal(size=(n, d))


def reference_diag(model, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """log p(x) and E[w_k] p_k(x) / p(x) in plain NumPy/SciPy (see the module doc)."""
    from scipy.special import gammaln, logsumexp

    params = model.posterior_parameters()  # data units
    m, s = params["loc_mean"], params["loc_sd"]  # [K, D]
    a, b = params["precision_shape"], params["precision_rate"]
    weights = params["concentration"] / params["concentration"].sum()
    nodes, node_weights = np.polynomial.hermite.hermgauss(40)
    log_node_weights = np.log(node_weights / np.sqrt(np.pi))
    joint = np.log(weights) + np.zeros((X.shape[0], m.shape[0]))
    for k in range(m.shape[0]):
        for d in range(m.shape[1]):
            mu = m[k, d] + np.sqrt(2.0) * s[k, d] * nodes  # [Q]
            z2 = (X[:, d : d + 1] - mu) ** 2  # [N, Q]
            log_t = (
                gammaln(a[k, d] + 0.5)
                - gammaln(a[k, d])
                - 0.5 * np.log(2 * np.pi * b[k, d])
                - (a[k, d] + 0.5) * np.log1p(z2 / (2 * b[k, d]))
            )
            joint[:, k] += logsumexp(log_t + log_node_weights, axis=1)
    log_density = logsumexp(joint, axis=1)
    return log_density, np.exp(joint - log_density[:, None])


def reference_full(model, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The Student-t mixture by ``scipy.stats.multivariate_t``, all points at once."""
    from scipy.special import logsumexp
    from scipy.stats import multivariate_t

    p = model.posterior_parameters()  # data units
    n_features = X.shape[1]
    dof = p["dof"] + 1 - n_features
    beta = p["mean_precision"]
    joint = np.empty((X.shape[0], len(dof)))
    for k in range(len(dof)):
        shape = np.linalg.inv(p["precision_scale"][k]) * (1 + beta[k]) / (beta[k] * dof[k])
        joint[:, k] = multivariate_t(p["loc_mean"][k], shape, df=dof[k]).logpdf(X)
    joint += np.log(p["concentration"] / p["concentration"].sum())
    log_density = logsumexp(joint, axis=1)
    return log_density, np.exp(joint - log_density[:, None])


def measure(case: dict) -> dict:
    """In this (fresh) process: the timing and peak extra memory of one method."""
    sys.path.insert(0, str(ROOT))
    import gmm

    model = gmm.BayesianGMM.load(case["model"])
    X = points_for(case["k"], case["d"], case["n"], seed=1)
    method = case["method"]
    call = {
        "score_samples": lambda: model.score_samples(X),
        "predict_proba": lambda: model.predict_proba(X),
        "numpy": lambda: (reference_full if case["covariance"] == "full" else reference_diag)(
            model, X
        ),
    }[method]
    if method == "numpy":
        gmm_value = model.predict_proba(X[:1000]), model.score_samples(X[:1000])
    call_small = {
        "score_samples": lambda: model.score_samples(X[:1000]),
        "predict_proba": lambda: model.predict_proba(X[:1000]),
        "numpy": lambda: None,
    }[method]
    call_small()  # warm-up (tracing, imports)
    before = memory_mb("VmRSS")
    times = []
    for _ in range(case["repeats"]):
        start = time.perf_counter()
        result = call()
        times.append(time.perf_counter() - start)
    peak = memory_mb("VmHWM") - before
    out = {"median_s": float(np.median(times)), "times_s": times, "peak_extra_mb": peak}
    if method == "numpy":
        ref_density, ref_proba = result
        out["max_abs_diff_log_density_first_1000"] = float(
            np.max(np.abs(ref_density[:1000] - gmm_value[1]))
        )
        out["max_abs_diff_proba_first_1000"] = float(
            np.max(np.abs(ref_proba[:1000] - gmm_value[0]))
        )
    return out


def fit_model(k: int, d: int, covariance: str, folder: str) -> str:
    sys.path.insert(0, str(ROOT))
    import warnings

    import gmm

    model = gmm.BayesianGMM(k, d, covariance=covariance)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", gmm.ConvergenceWarning)
        gmm.fit(model, points_for(k, d, 20_000, seed=0), max_steps=300, progress=False)
    path = os.path.join(folder, f"{covariance}_{k}_{d}")
    model.save(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="points per call")
    parser.add_argument("--n-large", type=int, default=100_000, help="points, diagonal K = D = 10")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(measure(json.loads(args.case))))
        return
    lines = [f"# benchmarks/prediction.py --n {args.n} --n-large {args.n_large} "
             f"--repeats {args.repeats}",
             f"# load average at start (1, 5, 15 min): {os.getloadavg()}; "
             f"{os.cpu_count()} CPUs"]  # fmt: skip
    print(*lines, sep="\n", flush=True)
    with tempfile.TemporaryDirectory() as folder:
        for covariance, k, d, n, methods in (
            ("diag", 3, 2, args.n, ("score_samples", "predict_proba", "numpy")),
            ("diag", 10, 10, args.n_large, ("score_samples", "predict_proba", "numpy")),
            ("full", 3, 2, args.n, ("predict_proba", "numpy")),
            ("full", 10, 10, args.n, ("predict_proba", "numpy")),
        ):
            path = fit_model(k, d, covariance, folder)
            data_mb = n * d * 8 / 2**20
            row = {}
            for method in methods:
                case = dict(model=path, k=k, d=d, n=n, covariance=covariance, method=method,
                            repeats=args.repeats)  # fmt: skip
                output = subprocess.run(
                    [sys.executable, __file__, "--case", json.dumps(case)],
                    capture_output=True, text=True, check=True,
                ).stdout  # fmt: skip
                row[method] = json.loads(output.strip().splitlines()[-1])
            numpy = row["numpy"]["median_s"]
            for method in methods:
                r = row[method]
                extra = (
                    f"; max |diff| to gmm on 1,000 points: log density "
                    f"{r['max_abs_diff_log_density_first_1000']:.2e}, proba "
                    f"{r['max_abs_diff_proba_first_1000']:.2e}"
                    if method == "numpy"
                    else f"; NumPy reference time / this = {numpy / r['median_s']:.2f}"
                )
                line = (
                    f"{covariance} K={k} D={d} N={n:,} {method}: median {r['median_s']:.2f} s "
                    f"(calls: {', '.join(f'{t:.2f}' for t in r['times_s'])}), peak extra memory "
                    f"{r['peak_extra_mb']:.0f} MB (data {data_mb:.0f} MB){extra}"
                )
                print(line, flush=True)
                lines.append(line)
    lines.append(f"# load average at end: {os.getloadavg()}")
    Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
