"""Plotting helpers shared by the notebooks: one theme, one ``savefig``, and
the few plots more than one notebook draws.

Every figure goes through ``savefig`` so the notebooks write to one folder
(``figures/`` by default; ``set_figure_dir`` or the ``GMM_FIGURE_DIR``
environment variable, which wins, point it elsewhere), with stable names
prefixed by the notebook's number, at one DPI. Each file records the parameters
of the run that wrote it (``figure_parameters``), so a test can tell a figure
left over from another run (``--small``, another seed) from the notebook's own.
"""

from __future__ import annotations

import json
import numbers
import os
import sys

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.patches import Ellipse
from matplotlib.ticker import MaxNLocator
from sklearn.mixture import BayesianGaussianMixture

from gmm._validation import check_seed, tf_seed
from gmm.model import BayesianGMM
from gmm.teaching.data import MixtureSpec

PALETTE = "colorblind"
DPI = 110  # figures/ files
INLINE_DPI = 80  # figures shown in notebooks: keeps committed notebooks small
_figure_dir: str | None = "figures"
# The PNG text chunk that holds the run's parameters, and the one name not recorded
# there: where figures go says nothing about what they show.
PARAMETERS_KEY = "Parameters"
_UNRECORDED = frozenset({"FIGURE_DIR"})


def set_theme() -> None:
    """The one look of every figure: seaborn's ticks style, colour-blind palette."""
    sns.set_theme(context="notebook", style="ticks", palette=PALETTE)
    plt.rcParams.update(
        {"figure.dpi": INLINE_DPI, "savefig.dpi": DPI, "savefig.bbox": "tight", "axes.grid": False}
    )


def set_figure_dir(path: str | os.PathLike | None) -> None:
    """Where ``savefig`` writes; ``None`` switches saving off. The environment
    variable ``GMM_FIGURE_DIR``, if set, overrides this (tests use it)."""
    global _figure_dir
    _figure_dir = None if path is None else os.fspath(path)


def figure_dir() -> str | None:
    return os.environ.get("GMM_FIGURE_DIR") or _figure_dir


def _main_namespace() -> dict:
    """The globals of the running notebook (IPython's user namespace: in a Jupyter
    kernel ``__main__`` is the kernel's launcher) or else of ``__main__``."""
    ipython_module = sys.modules.get("IPython")
    shell = ipython_module.get_ipython() if ipython_module is not None else None
    if shell is not None:
        return shell.user_ns
    return vars(sys.modules["__main__"]) if "__main__" in sys.modules else {}


def figure_parameters() -> dict:
    """The run's parameters as ``savefig`` records them: every upper-case global
    of the running notebook (or script) bound to a number, string, bool or None,
    except ``FIGURE_DIR``.

    A notebook's parameters cell binds such names (``RANDOM_SEED = 0``,
    ``N_POINTS = 3000``) and papermill's injected cell rebinds them, so these are
    the values the notebook ran with. Returns ``{name: value}``, numbers as
    Python ``int`` / ``float``.
    """
    namespace = _main_namespace()
    found = {}
    for name, value in namespace.items():
        if not name.isupper() or name.startswith("_") or name in _UNRECORDED:
            continue
        if value is None or isinstance(value, (str, bool)):
            found[name] = value
        elif isinstance(value, numbers.Integral):
            found[name] = int(value)
        elif isinstance(value, numbers.Real):
            found[name] = float(value)
    return dict(sorted(found.items()))


def savefig(name: str, fig=None) -> str | None:
    """Saves ``fig`` (default: the current figure) as ``<figure dir>/<name>.png``.

    The PNG carries one text chunk, ``Parameters``: ``figure_parameters()`` as
    JSON (tests/test_figures.py checks it against the notebook's parameters). It
    carries no software stamp or date, so re-running an unchanged notebook
    rewrites identical bytes.

    Args:
      name: a stable, plain file name without extension, e.g. ``"02_elbo_trace"``.

    Returns:
      the path written, or None when saving is switched off.
    """
    if not name or "/" in name or os.sep in name or name.startswith("."):
        raise ValueError(f"figure name must be a plain file name, got {name!r}.")
    folder = figure_dir()
    if folder is None:
        return None
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{name}.png")
    metadata = {"Software": None, PARAMETERS_KEY: json.dumps(figure_parameters())}
    (fig or plt.gcf()).savefig(path, metadata=metadata)
    return path


def colors(n: int) -> list:
    """``n`` colours from the project's colour-blind-safe palette."""
    return sns.color_palette(PALETTE, n)


# The colour-blind palette's entries in an order that keeps its near-twins apart: its
# orange (1), vermilion (3) and brown (5) are hard to tell apart where ellipses overlap,
# and so are its blue (0) and sky blue (9); its grey (7), last, vanishes on grey points.
_DISTINCT_ORDER = (0, 1, 2, 4, 8, 9, 3, 6, 5, 7)


def distinct_colors(n: int) -> list:
    """``n`` colours of the project's palette for components drawn on top of each
    other: blue, orange, green, purple and yellow, no two of one hue family; then
    the palette's sky blue, vermilion, pink, brown and grey, then again. The first
    three are ``colors(3)``, so a chapter's first three components keep their
    colours."""
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}.")
    palette = sns.color_palette(PALETTE, len(_DISTINCT_ORDER))
    return [palette[_DISTINCT_ORDER[i % len(_DISTINCT_ORDER)]] for i in range(n)]


def feature_label(d: int) -> str:
    return f"$x_{{{d}}}$ (data units)"


def scatter(ax, X, labels=None, dims=(0, 1), *, size=4, alpha=0.5, legend=False):
    """Data points projected on two features, coloured by ``labels`` if given.

    Args:
      X: ``[N, D]`` points; labels: ``[N]`` int or None; dims: the two features.
    """
    i, j = dims
    if labels is None:
        ax.scatter(X[:, i], X[:, j], s=size, alpha=alpha, color="0.3", linewidths=0)
    else:
        palette = colors(int(np.max(labels)) + 1)
        for k in np.unique(labels):
            ax.scatter(
                *X[labels == k][:, [i, j]].T,
                s=size,
                alpha=alpha,
                color=palette[k],
                linewidths=0,
                label=f"component {k}",
            )
        if legend:
            ax.legend(markerscale=3, frameon=False, fontsize="small")
    ax.set(xlabel=feature_label(i), ylabel=feature_label(j))
    return ax


def sklearn_mixture(estimator: BayesianGaussianMixture):
    """A fitted diagonal scikit-learn mixture as a ``gmm.data.MixtureSpec``
    (its point estimates), for plotting beside gmm's fits."""
    return MixtureSpec(
        weights=estimator.weights_,
        locs=estimator.means_,
        scales=np.sqrt(estimator.covariances_),
    )


def _marginal_log_density(source, points, dims):
    """Log density of ``source`` over features ``dims`` at ``points`` ``[n, 2]``."""
    if isinstance(source, BayesianGMM):
        return source.score_samples(points, features=dims)
    if isinstance(source, BayesianGaussianMixture):
        source = sklearn_mixture(source)
    if isinstance(source, MixtureSpec):
        return source.marginal(dims).log_density(points)
    raise TypeError(
        "source must be a BayesianGMM, a MixtureSpec or a fitted BayesianGaussianMixture, "
        f"got {type(source).__name__}."
    )


def density_grid(source, X, dims=(0, 1), resolution: int = 120, padding: float = 0.1):
    """A fitted density (marginal over ``dims``) on a grid covering ``X``.

    Returns:
      ``(xx, yy, density)``, each ``[resolution, resolution]``; density in
      1 / data units^2.
    """
    lo, hi = X[:, list(dims)].min(0), X[:, list(dims)].max(0)
    lo, hi = lo - padding * (hi - lo), hi + padding * (hi - lo)
    xx, yy = np.meshgrid(*(np.linspace(lo[a], hi[a], resolution) for a in range(2)))
    log_density = _marginal_log_density(source, np.column_stack([xx.ravel(), yy.ravel()]), dims)
    return xx, yy, np.exp(log_density).reshape(xx.shape)


def plot_density(
    ax, source, X, dims=(0, 1), *, labels=None, title=None, colorbar=True, levels=14, grid=None
):
    """Filled contours of a fitted density over the data's range, data on top.

    Args:
      levels: the number of contour levels, or their boundaries (1 / data
        units^2); give several panels the same boundaries to compare them
        (``plot_densities`` does).
      grid: ``density_grid(source, X, dims)``, if already computed.

    Returns:
      the filled contour set (for a colour bar).
    """
    xx, yy, density = density_grid(source, X, dims) if grid is None else grid
    filled = ax.contourf(xx, yy, density, levels=levels, cmap="mako_r")
    if colorbar:
        ax.figure.colorbar(filled, ax=ax, label="density (1 / data units$^2$)")
    scatter(ax, X, labels, dims, size=2, alpha=0.25)
    # Ellipses drawn later must not widen the axes beyond the density's grid.
    ax.set(xlim=(xx.min(), xx.max()), ylim=(yy.min(), yy.max()))
    if title:
        ax.set_title(title)
    return filled


def plot_densities(axes, sources: dict, X, dims=(0, 1), *, n_levels: int = 14):
    """Several fitted densities side by side on the same contour levels, under
    one colour bar, so equal colours mean equal densities in every panel.

    Args:
      axes: one Axes per source (from one figure).
      sources: ``{title: source}``, each a ``BayesianGMM``, ``MixtureSpec`` or
        fitted ``BayesianGaussianMixture``.
      n_levels: the number of contour levels shared by all panels.
    """
    axes = list(np.ravel(axes))
    grids = [density_grid(source, X, dims) for source in sources.values()]
    # Round boundaries from 0 to at least the highest density of any panel.
    levels = MaxNLocator(n_levels).tick_values(0.0, max(grid[2].max() for grid in grids))
    for ax, title, grid in zip(axes, sources, grids):
        filled = plot_density(
            ax, None, X, dims, title=title, colorbar=False, levels=levels, grid=grid
        )
    axes[0].figure.colorbar(filled, ax=axes, label="density (1 / data units$^2$)")
    return axes


def covariance_ellipse(loc, covariance, *, n_sd: float = 2.0, **style) -> Ellipse:
    """The ``n_sd``-sd ellipse of a 2-D Gaussian, as an unfilled matplotlib patch.

    Its semi-axes lie along the covariance's eigenvectors with lengths
    ``n_sd * sqrt(eigenvalue)``: the points x with Mahalanobis distance
    sqrt((x - loc)' covariance^-1 (x - loc)) = n_sd.

    Args:
      loc: ``[2]`` centre; covariance: ``[2, 2]`` symmetric positive-definite,
        data units^2; style: ``Ellipse`` keywords (``color``, ``lw``, ``ls``, ...).
    """
    covariance = np.asarray(covariance, dtype=float)
    if covariance.shape != (2, 2) or not np.allclose(covariance, covariance.T):
        raise ValueError(f"covariance must be a symmetric 2 x 2 matrix, got {covariance!r}.")
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)  # ascending
    if eigenvalues[0] <= 0:
        raise ValueError(f"covariance must be positive-definite, got eigenvalues {eigenvalues}.")
    if covariance[0, 1] == 0:  # axis-aligned: drawn unrotated, as plot_components always was
        angle, (width, height) = 0.0, 2 * n_sd * np.sqrt(np.diag(covariance))
    else:
        major = eigenvectors[:, 1]
        angle = np.degrees(np.arctan2(major[1], major[0]))
        width, height = 2 * n_sd * np.sqrt(eigenvalues[::-1])
    return Ellipse(
        tuple(np.asarray(loc, dtype=float)),
        width,
        height,
        angle=angle,
        **({"fill": False, "lw": 1.5} | style),
    )


def plot_covariances(
    ax, locs, covariances, dims=(0, 1), *, n_sd: float = 2.0, component_colors=None, **style
):
    """``n_sd``-sd ellipses and centres of components with full covariances,
    projected on features ``dims`` (the marginal covariance of those two).

    Args:
      locs: ``[K, D]`` means; covariances: ``[K, D, D]``, data units^2 (e.g.
        ``model.posterior_parameters()["covariance_mean"]``); component_colors: one
        colour per component (e.g. ``distinct_colors(K)`` where ellipses overlap);
        style: ``color`` (one for all; default one palette colour each), ``lw``,
        ``ls``, ``marker``.
    """
    dims = list(dims)
    palette = colors(len(locs)) if component_colors is None else list(component_colors)
    if len(palette) < len(locs):
        raise ValueError(
            f"component_colors must give one colour per component ({len(locs)}), "
            f"got {len(palette)}."
        )
    for k, (loc, covariance) in enumerate(zip(np.asarray(locs), np.asarray(covariances))):
        color = style.get("color", palette[k])
        ax.add_patch(
            covariance_ellipse(
                loc[dims],
                covariance[np.ix_(dims, dims)],
                n_sd=n_sd,
                color=color,
                lw=style.get("lw", 1.5),
                ls=style.get("ls", "-"),
            )
        )
        ax.plot(*loc[dims], marker=style.get("marker", "x"), color=color, ms=8, mew=2)
    return ax


def plot_components(ax, locs, scales, dims=(0, 1), *, n_sd: float = 2.0, **style):
    """Axis-aligned ``n_sd``-sd ellipses and centres of diagonal components
    (``plot_covariances`` with diagonal covariances).

    Args:
      locs, scales: ``[K, D]`` means and standard deviations, data units.
    """
    scales = np.asarray(scales, dtype=float)
    covariances = np.einsum("kd,de->kde", scales**2, np.eye(scales.shape[1]))
    return plot_covariances(ax, locs, covariances, dims, n_sd=n_sd, **style)


def plot_elbo(ax, histories: dict, *, window: int = 25, skip: int = 0):
    """ELBO traces (raw, faint) and their running mean (``window`` steps), each
    in its own colour and line style, so traces that coincide stay visible.

    Args:
      histories: ``{label: gmm.History}``.
      skip: steps to leave out at the start (where the ELBO is far lower).
    """
    styles = ["-", "--", ":", "-."]
    for i, (color, (label, history)) in enumerate(zip(colors(len(histories)), histories.items())):
        steps = np.arange(history.elbo.size)[skip:]
        elbo = history.elbo[skip:]
        ax.plot(steps, elbo, color=color, alpha=0.25, lw=0.8)
        smooth = pd.Series(elbo).rolling(window, min_periods=1).mean()
        ax.plot(steps, smooth, color=color, lw=2, ls=styles[i % len(styles)], label=label)
    ax.set(xlabel="step", ylabel="minibatch ELBO (nats / point)")
    ax.legend(frameon=False)
    return ax


def posterior_draws(model: BayesianGMM, n_draws: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Draws from q in data units as a long table for seaborn.

    Returns:
      DataFrame with columns ``draw``, ``component``, ``feature`` (None for
      weights), ``quantity`` (``"mean"``, ``"sd"`` or ``"weight"``) and ``value``.
    """
    q = model.posterior()
    seeds = [tf_seed(check_seed(seed), stream) for stream in (11, 12, 13)]
    locs = q["locs"].sample(n_draws, seed=seeds[0]).numpy()
    sds = q["precisions"].sample(n_draws, seed=seeds[1]).numpy() ** -0.5
    weights = q["weights"].sample(n_draws, seed=seeds[2]).numpy()
    frames = []
    for quantity, values in (("mean", locs), ("sd", sds), ("weight", weights)):
        index = np.meshgrid(*(np.arange(n) for n in values.shape), indexing="ij")
        frames.append(
            pd.DataFrame(
                {
                    "draw": index[0].ravel(),
                    "component": index[1].ravel(),
                    "feature": index[2].ravel() if values.ndim == 3 else None,  # None: weights
                    "quantity": quantity,
                    "value": values.ravel(),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


__all__ = [
    "DPI",
    "PALETTE",
    "colors",
    "covariance_ellipse",
    "density_grid",
    "distinct_colors",
    "feature_label",
    "figure_dir",
    "figure_parameters",
    "plot_components",
    "plot_covariances",
    "plot_densities",
    "plot_density",
    "plot_elbo",
    "posterior_draws",
    "savefig",
    "scatter",
    "set_figure_dir",
    "set_theme",
]
