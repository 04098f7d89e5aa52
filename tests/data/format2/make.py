"""Writes the checkpoints in this folder. They were written by gmm at commit
0ea1475, whose models held Adam's moments (under ``model/adam`` in a
checkpoint); tests/test_training_state.py checks that this version of gmm loads
the saved model and resumes the training checkpoint exactly.

    python tests/data/format2/make.py   # with gmm at 0ea1475 importable
"""

import pathlib

import gmm

HERE = pathlib.Path(__file__).parent
# As tests/test_robustness.py: Adam (the per-point estimator), minibatches.
FIT = dict(steps=200, batch_size=500, estimator="per_point", seed=3, progress=False)


def stop_at_step_90(model, step, elbo):
    if step == 90:
        raise KeyboardInterrupt


if __name__ == "__main__":
    X = gmm.data.seed_data(3000, seed=0)[0]
    try:
        gmm.fit(gmm.BayesianGMM(3, 2), X, checkpoint_dir=HERE / "training",
                checkpoint_every=30, callbacks=[stop_at_step_90], **FIT)  # fmt: skip
    except KeyboardInterrupt:
        pass
    model = gmm.BayesianGMM(3, 2)
    gmm.fit(model, X, **FIT)
    model.save(HERE / "model")
