"""`clipdepth serve`: a small local web page for depth from one uploaded image (needs the [serve] extra)."""
from __future__ import annotations

from .app import create_app

__all__ = ["create_app"]
