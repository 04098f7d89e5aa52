"""The default seed-data fit (``gmm.fit(gmm.BayesianGMM(3, 2), seed_data(3000, seed=0)[0])``,
full batch, run to convergence) timed with two checkouts of gmm, in one run.

Each checkout is timed in its own child process (one Python process imports
one ``gmm``): a warm-up fit (tracing), then ``--repeats`` timed fits, their
median printed. The children alternate, A B A B, so that a change in the
machine's load hits both alike; the ratio of the medians is printed last.
Also prints each fit's steps and final ELBO: equal steps and ELBO say the
change did not move the default fit's result.

Usage: ``python benchmarks/convergence_overhead.py BEFORE_CHECKOUT AFTER_CHECKOUT``
(e.g. ``/work/main .``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

CHILD = """
import json, os, time, warnings
import numpy as np
import gmm
X = gmm.data.seed_data(3000, seed=0)[0]
def once():
    model = gmm.BayesianGMM(3, 2)
    start = time.perf_counter()
    history = gmm.fit(model, X, progress=False)
    return time.perf_counter() - start, history
once()  # warm-up: tracing
times, history = [], None
for _ in range({repeats}):
    seconds, history = once()
    times.append(seconds)
print(json.dumps({{"file": gmm.__file__, "times": times, "steps": history.steps,
                  "elbo": float(history.elbo[-1])}}))
"""


def run(checkout: str, repeats: int) -> dict:
    env = dict(os.environ, PYTHONPATH=os.path.abspath(checkout), PYTHONHASHSEED="0")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    out = subprocess.run(
        [sys.executable, "-c", CHILD.format(repeats=repeats)],
        env=env,
        cwd=os.path.abspath(checkout),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    times = {"before": [], "after": []}
    for round_ in range(args.rounds):
        for name in ("before", "after"):
            result = run(getattr(args, name), args.repeats)
            times[name] += result["times"]
            print(
                f"round {round_ + 1} {name:6s} {result['file']}: median "
                f"{statistics.median(result['times']):.3f} s over {args.repeats} fits; "
                f"steps {result['steps']}, final ELBO {result['elbo']:.10f}"
            )
    medians = {name: statistics.median(values) for name, values in times.items()}
    print(
        f"median of {len(times['before'])} fits: before {medians['before']:.3f} s, after "
        f"{medians['after']:.3f} s, after / before {medians['after'] / medians['before']:.3f}"
    )


if __name__ == "__main__":
    main()
