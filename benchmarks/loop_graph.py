"""Are two versions of gmm's compiled loop the same computation? A refactor that
leaves the traced graph alone cannot change a step's time, and a timing
comparison on a shared 2-core machine cannot resolve 10% in two rounds
(benchmarks/results/composable_core_session7.txt measured the same code at
0.71-1.21 of itself), so this compares the graphs instead of timing them.

For each tree given, in its own process, it fits seven configurations (diagonal and
full covariances, Dirichlet and Dirichlet-process weights, natural steps and Adam,
a minibatch run, XLA, a tf.data stream) for 5 steps, and counts the op types of the
``gmm.inference.loop.train_chunk`` graphs each fit traced (their function
libraries included; op names differ between trees, op types must not). It prints
the counts per configuration and, for two trees, whether they are equal.

    python benchmarks/loop_graph.py TREE [OTHER_TREE] [--out FILE]

where a tree is a checkout of the repository (``git worktree add`` or ``git
archive``). It uses ``tf.function``'s private ``_list_all_concrete_functions``.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys

CONFIGURATIONS = [
    {"covariance": "diag", "weights": "dirichlet", "algorithm": "natural"},
    {"covariance": "diag", "weights": "dirichlet", "algorithm": "adam"},
    {"covariance": "full", "weights": "dirichlet", "algorithm": "natural"},
    {"covariance": "full", "weights": "dirichlet_process", "algorithm": "adam"},
    {
        "covariance": "diag",
        "weights": "dirichlet_process",
        "algorithm": "natural",
        "batch_size": 100,
    },
    {"covariance": "diag", "weights": "dirichlet", "algorithm": "adam", "jit_compile": True},
    {"covariance": "full", "weights": "dirichlet", "algorithm": "natural", "stream": True},
]


def op_counts() -> list[dict]:
    """In this process (gmm imported from the tree on sys.path): per configuration,
    the number of new traces and their op-type counts."""
    import warnings

    import tensorflow as tf

    import gmm
    from gmm.inference import loop

    warnings.simplefilter("ignore")
    X = gmm.data.seed_data(600)[0]
    results = []
    for settings in CONFIGURATIONS:
        settings = dict(settings)
        model = gmm.BayesianGMM(
            3, 2, covariance=settings.pop("covariance"), weights=settings.pop("weights")
        )
        data = X
        if settings.pop("stream", False):  # batches of 100 from a tf.data pipeline
            data = tf.data.Dataset.from_tensor_slices(X).batch(100)
        known = {id(f) for f in loop.train_chunk._list_all_concrete_functions()}
        gmm.fit(model, data, steps=5, progress=False, moves=None, **settings)
        counts = collections.Counter()
        traces = [f for f in loop.train_chunk._list_all_concrete_functions() if id(f) not in known]
        for function in traces:
            graph = function.graph.as_graph_def()
            counts.update(node.op for node in graph.node)
            for library_function in graph.library.function:
                counts.update(node.op for node in library_function.node_def)
        results.append({"traces": len(traces), "ops": dict(sorted(counts.items()))})
    return results


def run_tree(tree: str) -> list[dict]:
    environment = {
        **os.environ,
        "PYTHONPATH": os.path.abspath(tree),
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "TF_ENABLE_ONEDNN_OPTS": "0",
        "PYTHONHASHSEED": "0",
    }
    code = "import json, loop_graph; print(json.dumps(loop_graph.op_counts()))"
    here = os.path.dirname(os.path.abspath(__file__))
    output = subprocess.run(
        [sys.executable, "-c", f"import sys; sys.path.append({here!r}); {code}"],
        env=environment, capture_output=True, text=True, check=True, cwd=os.path.abspath(tree),
    ).stdout  # fmt: skip
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("trees", nargs="+", help="one or two checkouts of the repository")
    parser.add_argument("--out", help="also write the report to this file")
    args = parser.parse_args()
    results = [run_tree(tree) for tree in args.trees]
    lines = []
    for index, settings in enumerate(CONFIGURATIONS):
        row = [
            f"{sum(result[index]['ops'].values())} ops in {result[index]['traces']} trace(s)"
            for result in results
        ]
        if len(results) == 2:
            row.append("same op counts" if results[0][index] == results[1][index] else "DIFFERENT")
        lines.append(f"{json.dumps(settings)}: " + "; ".join(row))
    report = "\n".join([f"trees: {args.trees}", *lines])
    print(report)
    if args.out:
        with open(args.out, "w") as file:
            file.write(report + "\n")


if __name__ == "__main__":
    main()
