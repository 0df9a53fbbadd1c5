"""Executed notebook -> one self-contained HTML file to hand to a customer.

nbconvert's HTMLExporter with the JupyterLab template, adjusted so the file
opens offline: no require.js, MathJax, Mermaid or widget scripts from CDNs, CSS
inlined, figures embedded as data: URIs, no code cells or prompts, no stderr
noise; plus a table of contents built from the section headings. Strings that
come from captures and dumps reach the HTML only through outputs that escape
them (`natlens.report.text`, pandas tables), and markdown cells are ours.
"""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser
from pathlib import Path

import nbformat

_TEMPLATE = r"""
{%- extends 'index.html.j2' -%}
{%- block html_head_js -%}{%- endblock html_head_js -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{% block jupyter_widgets %}{% endblock jupyter_widgets %}
{%- block data_javascript scoped -%}{%- endblock data_javascript -%}
{%- block data_widget_view scoped -%}{%- endblock data_widget_view -%}
{% block extra_css %}
<meta name="generator" content="natlens report">
<style type="text/css">
body.jp-Notebook { padding: 0 !important; }
main { margin-left: 17rem; max-width: 68rem; padding: 1rem 2rem; }
nav.natlens-toc { position: fixed; top: 0; left: 0; bottom: 0; width: 15rem; overflow-y: auto;
  padding: 1rem; background: #f6f7f9; border-right: 1px solid #dde1e6; font: 14px/1.4 sans-serif; }
nav.natlens-toc ol { padding-left: 1.1rem; margin: .3rem 0; }
nav.natlens-toc a { color: #1f3b5c; text-decoration: none; }
nav.natlens-toc .toc-h3 { font-size: 13px; }
.natlens-banner { padding: .9rem 1.2rem; border-radius: 6px; margin: .5rem 0 1rem; color: #fff;
  overflow-wrap: anywhere; }
.natlens-banner h1 { color: #fff; margin: 0 0 .3rem; font-size: 1.6rem; }
.natlens-banner p { margin: .2rem 0; font-size: 1.05rem; }
.natlens-banner.verdict-bad { background: #b3261e; }
.natlens-banner.verdict-ok { background: #2e7d32; }
.natlens-banner.verdict-unknown { background: #6b6f76; }
.natlens-banner.verdict-warn { background: #8a5a00; }
.natlens-banner .natlens-evidence { background: rgba(0,0,0,.22); padding: .35rem .6rem; border-radius: 4px; }
/* JupyterLab's own ".jp-RenderedHTMLCommon pre" and nbconvert's ".jp-OutputArea-output pre
   { font-family: inherit }" come later in the page with the same weight as "pre.x", so these
   selectors carry the output classes too (the rule-trace test checks the computed style). */
.jp-RenderedHTMLCommon pre.natlens-trace, .jp-OutputArea-output pre.natlens-trace, pre.natlens-trace {
  background: #f6f7f9; padding: .5rem .75rem; margin: .3rem 0 1rem; border-radius: 4px;
  font-family: "DejaVu Sans Mono", Menlo, Consolas, "Liberation Mono", monospace; font-size: 12px;
  line-height: 1.45; white-space: pre-wrap; overflow-wrap: anywhere; }
.natlens-trace .natlens-trace-line { display: block; padding-left: 2em; text-indent: -2em; }
/* Report tables (display.table_html); "table.natlens-table" outweighs JupyterLab's
   ":not(.jp-RenderedMarkdown).jp-RenderedHTMLCommon td" (right-aligns every cell). */
.jp-RenderedHTMLCommon table.natlens-table { table-layout: auto; width: auto; margin: .4rem 0 1rem; }
.jp-RenderedHTMLCommon table.natlens-table caption { caption-side: top; text-align: left;
  color: #3c4148; font-size: 13px; padding: 0 0 .35rem; }
.jp-RenderedHTMLCommon table.natlens-table th { white-space: normal; vertical-align: bottom; text-align: left;
  padding: .4em .45em; }
.jp-RenderedHTMLCommon table.natlens-table td { text-align: left; vertical-align: top; padding: .4em .45em; }
.jp-RenderedHTMLCommon table.natlens-table th.natlens-num,
.jp-RenderedHTMLCommon table.natlens-table td.natlens-num { text-align: right; font-variant-numeric: tabular-nums; }
.jp-RenderedHTMLCommon table.natlens-table td.natlens-wrap { white-space: normal; min-width: 8rem;
  overflow-wrap: anywhere; }
.jp-RenderedHTMLCommon table.natlens-table tr.natlens-more td { text-align: center; color: #6b6f76; }
.natlens-banner .natlens-facts { font-size: .95rem; opacity: .95; }
.natlens-banner .natlens-facts code { color: #111; }
.natlens-story h3.natlens-story-h { margin: 1rem 0 .3rem; font-size: 1.15rem; }
.natlens-story details { margin: .2rem 0 .5rem; }
.natlens-story summary { cursor: pointer; }
pre.natlens-decisive mark { background: #fff1a8; color: inherit; padding: 0 .15em; }
.natlens-made { color: #5b6067; font-size: 12px; margin-top: 1rem; overflow-wrap: anywhere; }
/* Narrow windows (a laptop split screen, a phone): the contents go above the report. */
@media (max-width: 1100px) {
  nav.natlens-toc { position: static; width: auto; border-right: 0; border-bottom: 1px solid #dde1e6; }
  nav.natlens-toc ol { columns: 2; column-gap: 2rem; }
  main { margin-left: 0; padding: 1rem; }
  .natlens-banner h1 { font-size: 1.3rem; }
}
@media print { nav.natlens-toc { position: static; width: auto; border: 0; } main { margin: 0; } }
</style>
{% endblock extra_css %}
{%- block body_header -%}
{{ super() }}
<!--natlens:toc-->
{%- endblock body_header -%}
"""

NOTEBOOK_ONLY = "notebook-only"  # cell tag: shown in JupyterLab, left out of the HTML report
_TOC_MARK = "<!--natlens:toc-->"
# Anything that would make a browser fetch something: a URL (scheme:// or //host) in an attribute
# that loads or links, CSS url(...) to one and @import, in a style attribute or a <style> element.
# Text is not markup: an escaped `src=https://...` in incident.yaml's notes loads nothing.
_URL = re.compile(r"^\s*(?:[a-z][a-z0-9+.-]*:)?//", re.IGNORECASE)
_CSS = re.compile(r"""url\(\s*["']?\s*(?:[a-z][a-z0-9+.-]*:)?//|@import\s""", re.IGNORECASE)
_LOADING = {"src", "href", "data", "poster", "action", "formaction", "background", "srcset", "xlink:href",
            "manifest", "ping"}


def external_references(page: str) -> list[str]:
    """Every place in `page`'s markup that refers to something outside the file (should be none)."""
    finder = _External()
    finder.feed(page)
    finder.close()
    return finder.found


class _External(HTMLParser):
    """Collects loading attributes and CSS that point outside the page (see external_references)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[str] = []
        self._style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            value = value or ""
            urls = value.split(",") if name == "srcset" else [value]
            if (name in _LOADING and any(_URL.match(u) for u in urls)) or (name == "style" and _CSS.search(value)):
                self.found.append(f"<{tag} {name}={value[:80]!r}>")
        self._style = tag == "style"

    def handle_endtag(self, tag: str) -> None:
        self._style = False

    def handle_data(self, data: str) -> None:
        if self._style and _CSS.search(data):
            m = _CSS.search(data)
            self.found.append(f"<style>...{data[max(0, m.start() - 40): m.end() + 60]}")


def render_html(notebook: str | Path | nbformat.NotebookNode, output: str | Path | None = None,
                *, title: str | None = None) -> str:
    """Render an executed notebook to self-contained HTML; write it to `output` if given."""
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter

    nb = notebook if isinstance(notebook, nbformat.NotebookNode) else nbformat.read(str(notebook), as_version=4)
    nb = _strip_noise(nb)
    if title:
        nb.metadata["title"] = title
    exporter = HTMLExporter(
        template_name="lab",
        template_file="natlens.html.j2",
        extra_loaders=[DictLoader({"natlens.html.j2": _TEMPLATE})],
        exclude_input=True,
        exclude_input_prompt=True,
        exclude_output_prompt=True,
        embed_images=True,
        theme="light",
    )
    body, _ = exporter.from_notebook_node(nb)
    body = body.replace(_TOC_MARK, toc_html(body), 1)
    refs = external_references(body)
    if refs:  # never ship a report that would reach out to the network
        raise RuntimeError(f"rendered HTML refers to external resources: {refs[:3]}")
    if output is not None:
        Path(output).write_text(body, encoding="utf-8")
    return body


def toc_html(page: str) -> str:
    """A <nav> listing the page's h1-h3 headings that have an id, in order."""
    parser = _Headings()
    parser.feed(page)
    items = []
    for level, hid, text in parser.headings:
        if level == 1:
            continue  # the title, shown in the banner
        items.append(f'<li class="toc-h{level}"><a href="#{html.escape(hid, quote=True)}">'
                     f"{html.escape(text)}</a></li>")
    return ('<nav class="natlens-toc" id="toc" aria-label="Contents"><strong>Contents</strong>'
            f"<ol>{''.join(items)}</ol></nav>")


class _Headings(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.headings: list[tuple[int, str, str]] = []
        self._open: tuple[int, str] | None = None
        self._text: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if len(tag) == 2 and tag[0] == "h" and tag[1] in "123":
            hid = dict(attrs).get("id")
            if hid:
                self._open, self._text = (int(tag[1]), hid), []
        elif tag == "a" and self._open and "anchor-link" in (dict(attrs).get("class") or ""):
            self._skip += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._skip:
            self._skip -= 1
        elif self._open and tag == f"h{self._open[0]}":
            self.headings.append((self._open[0], self._open[1], "".join(self._text).strip()))
            self._open = None

    def handle_data(self, data: str) -> None:
        if self._open and not self._skip:
            self._text.append(data)


def _strip_noise(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy without notebook-only cells, stderr streams, scripts and widget state."""
    nb = nbformat.from_dict(nb)
    nb.metadata.pop("widgets", None)
    nb.cells = [c for c in nb.cells if NOTEBOOK_ONLY not in c.get("metadata", {}).get("tags", [])]
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        keep = []
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream" and out.get("name") == "stderr":
                continue
            data = out.get("data")
            if data is not None:
                for mime in ("application/javascript", "application/vnd.jupyter.widget-view+json"):
                    data.pop(mime, None)
                if not data:
                    continue
            keep.append(out)
        cell.outputs = keep
    return nb
