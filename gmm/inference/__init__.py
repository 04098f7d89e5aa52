"""Fitting: the update rules, the compiled loop and what runs around it.

fitting.py       ``gmm.fit``: checks, the start, the loop, moves, the History
loop.py          the compiled training loop (Adam or natural steps on a Batch)
optim.py         Adam's state, outside the model
convergence.py   when to stop (the ELBO's plateau, the fixed point)
callbacks.py     progress bars and user callbacks between chunks
distributed.py   tf.distribute strategies (replicas and workers)
moves.py         merge, delete, birth, split-merge and sort moves
memo.py          the memoized full-data statistics the moves use
selection.py     choosing K: deleting components, sweeping K
"""
