"""Did the fit work, and how far can it be trusted?

evaluate.py          scores, references and scikit-learn side by side
reference.py         CAVI in plain NumPy (Bishop's updates), shares no code with gmm
mcmc.py              NUTS on the same model, the gold standard for small problems
psis.py              Pareto-smoothed importance sampling of q against the posterior
linear_response.py   linear-response (LRVB) covariances
"""
