"""Jupyter output records that widgets assign to an ``Output`` widget's ``outputs``."""

from __future__ import annotations

import base64
import io
from typing import Any

from matplotlib.figure import Figure


def png_output(fig: Figure, dpi: int = 80) -> dict[str, Any]:
    """A ``display_data`` output holding ``fig`` as PNG (works with any matplotlib backend)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return {
        "output_type": "display_data",
        "data": {"image/png": base64.b64encode(buffer.getvalue()).decode("ascii"), "text/plain": "<figure>"},
        "metadata": {},
    }
