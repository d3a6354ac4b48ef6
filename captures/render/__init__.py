"""The sequence model drawn: one layout (layout.py), then SVG, JSON, Mermaid, PlantUML and a
Markdown postmortem from it. Pure Python: no Django, no pyshark, no kubernetes.

    layout = build_layout(model)            # folded repetitions, for people
    svg = render_svg(layout)
    browser_json = build_layout(model, fold=False).to_json()   # every message placed
"""

from .layout import LAYOUT_SCHEMA, Layout, build_layout
from .markdown import render_markdown
from .mermaid import render_mermaid
from .plantuml import render_plantuml
from .svg import render_svg

__all__ = [
    "LAYOUT_SCHEMA",
    "Layout",
    "build_layout",
    "render_markdown",
    "render_mermaid",
    "render_plantuml",
    "render_svg",
]
