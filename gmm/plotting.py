"""Plotting helpers shared by the notebooks: one theme, one ``savefig``.

Every figure goes through ``savefig`` so the notebooks write to one folder
(``figures/`` by default, switchable with ``set_figure_dir``), with stable
names prefixed by the notebook's number, at one DPI.
"""

from __future__ import annotations

import os

import matplotlib

if not os.environ.get("DISPLAY") and "ipykernel" not in matplotlib.get_backend().lower():
    # Headless runs (CI, make reproduce from a terminal) must not need a screen.
    if matplotlib.get_backend().lower() not in ("agg", "module://matplotlib_inline.backend_inline"):
        matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import seaborn as sns  # noqa: E402

_FIGURE_DIR = os.environ.get("GMM_FIGURE_DIR", "figures")
PALETTE = "colorblind"
DPI = 110


def set_theme() -> None:
    """The one look of every figure: seaborn's ticks style, colour-blind palette."""
    sns.set_theme(context="notebook", style="ticks", palette=PALETTE)
    plt.rcParams.update({"figure.dpi": DPI, "savefig.dpi": DPI, "savefig.bbox": "tight"})


def set_figure_dir(path: str | os.PathLike | None) -> None:
    """Where ``savefig`` writes; ``None`` switches saving off."""
    global _FIGURE_DIR
    _FIGURE_DIR = None if path is None else os.fspath(path)


def savefig(name: str, fig=None) -> str | None:
    """Saves ``fig`` (default: the current figure) as ``<figure dir>/<name>.png``.

    Args:
      name: a stable file name without extension, e.g. ``"02_elbo_trace"``.

    Returns:
      the path written, or None when saving is switched off.
    """
    if _FIGURE_DIR is None:
        return None
    if not name or os.sep in name or "/" in name or name.startswith("."):
        raise ValueError(f"figure name must be a plain file name, got {name!r}.")
    os.makedirs(_FIGURE_DIR, exist_ok=True)
    path = os.path.join(_FIGURE_DIR, f"{name}.png")
    (fig or plt.gcf()).savefig(path, metadata={"Software": None})
    return path


def colors(n: int) -> list:
    """``n`` colours from the project's palette."""
    return sns.color_palette(PALETTE, n)


__all__ = ["DPI", "PALETTE", "colors", "savefig", "set_figure_dir", "set_theme"]
