"""Every export format in one table: its renderer, content type and file extension. The
dashboard's downloads and `kviz analyze --format` both draw through `render`, so a format is
added here once.

    text = render("markdown", model, title="dns-http", facts={...}, notes=[...])
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .layout import Layout, build_layout
from .markdown import render_markdown
from .mermaid import render_mermaid
from .plantuml import render_plantuml
from .svg import render_svg


@dataclass(frozen=True)
class Format:
    draw: Callable[..., str]  # (layout, title, facts, notes, svg_href) -> text
    content_type: str
    suffix: str
    folds: bool = True  # the layout format lists every message; the drawings fold repeats


FORMATS = {
    "svg": Format(lambda layout, title, facts, notes, svg_href: render_svg(layout, title=title),
                  "image/svg+xml", ".svg"),
    "mermaid": Format(lambda layout, title, facts, notes, svg_href: render_mermaid(layout),
                      "text/plain; charset=utf-8", ".mmd"),
    "plantuml": Format(lambda layout, title, facts, notes, svg_href:
                       render_plantuml(layout, title=title),
                       "text/plain; charset=utf-8", ".puml"),
    "markdown": Format(lambda layout, title, facts, notes, svg_href:
                       render_markdown(layout, facts=facts, notes=notes, svg_href=svg_href,
                                       title=title),
                       "text/markdown; charset=utf-8", ".md"),
    "layout": Format(lambda layout, title, facts, notes, svg_href: layout.to_json(),
                     "application/json", ".layout.json", folds=False),
}


def layout_for(fmt: str, model, fold: bool = True) -> Layout:
    """The layout `fmt` draws: folded unless the format lists every message or `fold` is off."""
    return build_layout(model, fold=fold and FORMATS[fmt].folds)


def render(fmt: str, model, *, fold: bool = True, layout: Layout | None = None,
           title: str | None = None, facts: dict | None = None, notes: list[dict] | None = None,
           svg_href: str | None = None, part: int | None = None) -> str:
    """`model` drawn as `fmt` (a key of FORMATS); pass `layout` when it is built already.
    `part`: which diagram of a Mermaid export too long for one (render_mermaid_parts)."""
    layout = layout if layout is not None else layout_for(fmt, model, fold)
    if fmt == "mermaid" and part is not None:
        return render_mermaid(layout, part=part)
    return FORMATS[fmt].draw(layout, title, facts, notes, svg_href)
