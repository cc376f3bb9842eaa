"""Where a notebook runs, and what widgets there need: a widget frontend or a figure."""

from __future__ import annotations

import importlib.util
import io
import os
import sys
from typing import TYPE_CHECKING

from .errors import CourseError
from .settings import WIDGETS_ENV

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "WidgetView",
    "in_kernel",
    "ipywidgets_module",
    "picture",
    "png",
    "static_wanted",
    "widget_frontend",
]

_YES = ("1", "true", "yes", "on")
_NO = ("0", "false", "no", "off")


def in_kernel() -> bool:
    """True inside a Jupyter kernel (IPython running under ipykernel), whatever the frontend."""
    ipython = sys.modules.get("IPython")  # never imported here: a kernel has imported it
    shell = ipython.get_ipython() if ipython is not None else None
    return getattr(shell, "kernel", None) is not None


def widget_frontend() -> bool:
    """True when ipywidgets will be seen: a kernel started by a Jupyter server (JupyterLab,
    Notebook 7) or Colab, with ipywidgets installed.

    Kernels run by nbclient/nbconvert (CI, grading), plain Python and terminal IPython get
    text and figures instead. ``$CNN_COURSE_WIDGETS`` set to 1 or 0 overrides the guess (for
    another widget frontend, or to turn widgets off).
    """
    setting = os.environ.get(WIDGETS_ENV, "").strip().lower()
    if setting in _NO or importlib.util.find_spec("ipywidgets") is None:
        return False
    if setting in _YES:
        return True
    started_by_server = bool(os.environ.get("JPY_SESSION_NAME"))  # set by jupyter_server
    return in_kernel() and (started_by_server or "google.colab" in sys.modules)


def ipywidgets_module():
    """ipywidgets, or a message saying how to get it (or a figure instead)."""
    try:
        import ipywidgets
    except ImportError:
        raise CourseError(
            "ipywidgets is not installed in this environment: install it "
            "(`pip install ipywidgets`), or pass static=True to get a figure instead."
        ) from None
    return ipywidgets


def static_wanted(static: bool | None) -> bool:
    """Whether a view draws a figure (``static``, else when no widget frontend shows it)."""
    return (not widget_frontend()) if static is None else bool(static)


def picture(ipw, **layout):
    """An Image widget shown at the figure's own size (a box would stretch it to its width)."""
    return ipw.Image(format="png", layout={"align_self": "flex-start", **layout})


def png(figure: Figure) -> bytes:
    """The figure as PNG bytes, for an Image widget."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    return buffer.getvalue()


class WidgetView:
    """Jupyter shows the object as its ``widget`` (an ipywidgets box)."""

    widget = None

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)
