"""Figures kept as PNG files in ``RUN_DIR/figures/``, keyed by a hash of what they show.

A figure is drawn again only when its inputs, the code that draws it, the
output settings or the matplotlib version changed. ``flmi report`` on a
finished run, and a resumed run's report, reuse the figures whose inputs are
unchanged (the labels per site, a survival run's Kaplan-Meier curves) and
draw only the rest.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from flmi import __version__
from flmi.tensorio import atomic_write_bytes

FIGURES = "figures"
DPI = 100
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_CODE = ("plots.py", "site_plots.py", "site_selection.py", "km_plot.py", "figure_cache.py")


@functools.cache
def _code_hash() -> str:
    """A hash of the modules that draw figures, so a change to them redraws every figure."""
    here = Path(__file__).parent
    digest = hashlib.sha256()
    for name in _CODE:
        digest.update((here / name).read_bytes())
    return digest.hexdigest()


def render_png(fig: Figure, *, dpi: int = DPI) -> bytes:
    """The figure as PNG bytes, drawn on an Agg canvas (no display, no pyplot state)."""
    import io

    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def figure_key(name: str, inputs: object, *, dpi: int = DPI) -> str:
    """The hash a figure is stored under: its name, inputs, code, dpi and matplotlib version."""
    text = json.dumps(
        {
            "figure": name,
            "inputs": inputs,
            "dpi": dpi,
            "code": _code_hash(),
            "flmi": __version__,
            "matplotlib": matplotlib.__version__,
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


class FigureCache:
    """Draw a figure, or read it back when nothing it shows has changed.

    Parameters
    ----------
    directory
        Where the PNG files live (``RUN_DIR/figures``); ``None`` draws every figure.
    dpi
        Resolution of every PNG.

    Attributes
    ----------
    drawn
        Names of the figures drawn, in order.
    reused
        Names of the figures read back from ``directory``.
    """

    def __init__(self, *, directory: Path | None, dpi: int = DPI) -> None:
        self.directory = directory
        self.dpi = dpi
        self.drawn: list[str] = []
        self.reused: list[str] = []

    def png(self, name: str, *, inputs: object, draw: Callable[[], Figure]) -> bytes:
        """The PNG of figure ``name``, drawn by ``draw`` unless stored for these ``inputs``.

        Parameters
        ----------
        name
            The figure's file-name stem (letters, digits, ``-`` and ``_``).
        inputs
            Everything the figure shows, JSON-ready; its hash is the key.
        draw
            Draws the figure; called only when no stored PNG matches.
        """
        if self.directory is None:
            self.drawn.append(name)
            return self._draw(draw)
        path = self.directory / f"{name}.{figure_key(name, inputs, dpi=self.dpi)}.png"
        if path.is_file():
            data = path.read_bytes()
            if data.startswith(PNG_MAGIC):
                self.reused.append(name)
                return data
        data = self._draw(draw)
        self.drawn.append(name)
        for stale in self.directory.glob(f"{name}.*.png"):
            stale.unlink(missing_ok=True)
        atomic_write_bytes(path, data)
        return data

    def _draw(self, draw: Callable[[], Figure]) -> bytes:
        fig = draw()
        data = render_png(fig, dpi=self.dpi)
        fig.clear()  # free its artists now rather than at the next garbage collection
        return data
