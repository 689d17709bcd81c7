"""HTML that opens without a network: plotly figures and notebook reports with nothing from a CDN.

Three places would otherwise fetch scripts from CDNs, which fails offline (console errors,
missing pieces): plotly's `notebook` renderer adds a MathJax `<script src=https://cdnjs...>`
to every figure, and nbconvert's `lab` template loads require.js, MathJax, mermaid and the
ipywidgets HTML manager. Here:

- `OfflineNotebookRenderer` is plotly's notebook renderer (plotly.js embedded once in the
  notebook) without the MathJax tag; `kdlab.report.notebook_runner.use_embedded_plotly` selects it.
- `offline_html_exporter()` is nbconvert's lab exporter with those loaders removed. Widget
  views are drawn statically beforehand (`kdlab.report.widget_snapshot`), so nothing needs the
  widget manager. LaTeX in markdown cells is typeset by MathJax 2 from the PyPI package
  `jupyter-server-mathjax`, copied beside the report (`install_mathjax`) and loaded by a
  relative URL, so the folder of reports keeps working when moved (that package ships only the
  STIX-Web fonts, so the pages select them).
- `external_resources(page)` lists what a page would still fetch from elsewhere.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Mapping
from pathlib import Path

from plotly.io.base_renderers import NotebookRenderer

OFFLINE_TEMPLATE = "kdlab_offline.html.j2"
# MathJax 2 settings read when it loads: the STIX-Web fonts (the only ones jupyter-server-mathjax
# ships), no hidden MathML copies or previews (their styles ask for the absent TeX fonts), and a
# local stand-in for the blank test font (`about:blank` is refused on file:// pages).
MATHJAX_SETTINGS = """{
  "HTML-CSS": {availableFonts: [], preferredFont: null, webFont: "STIX-Web", imageFont: null,
               styles: {"@font-face": {"font-family": "MathJax_Blank", src: "local('MathJax_Blank')"}}},
  "fast-preview": {disabled: true}, AssistiveMML: {disabled: true}, MMLorHTML: {prefer: "HTML"},
  menuSettings: {renderer: "HTML-CSS", CHTMLpreview: false, assistiveMML: false}
}"""
_OFFLINE_TEMPLATE_SOURCE = (
    """{%- extends 'index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{%- block html_head_js_mathjax -%}
<script>window.MathJax = """
    + MATHJAX_SETTINGS
    + """;</script>
{{ super() }}
{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
"""
)
# An element attribute that loads something from another host: src/href/data of a tag that
# fetches (a plain <a href> is a link, not a load), or a CSS @import / url(...).
_EXTERNAL = re.compile(
    r"<(?:script|link|img|iframe|audio|video|source|embed|object)\b[^>]*?\b(?:src|href|data)\s*=\s*[\"']?((?:https?:)?//[^\"'\s>]+)"
    r"|@import\s+(?:url\()?[\"']?((?:https?:)?//[^\"')\s]+)",
    re.IGNORECASE,
)


MATHJAX_FOLDER = "mathjax"
MATHJAX_URL = f"{MATHJAX_FOLDER}/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full,Safe"


class OfflineNotebookRenderer(NotebookRenderer):
    """plotly's `notebook` renderer minus the per-figure MathJax CDN script (mime type text/html)."""

    def to_mimebundle(self, fig_dict: Mapping) -> dict:
        return {"text/html": figure_html(fig_dict)}


def figure_html(figure: Mapping, on_load: bool = False) -> str:
    """A `<div>` + `<script>` drawing `figure` (a plotly figure dict) with a page-global plotly.js.

    The page must load plotly.js itself once (`plotlyjs_script()`). Width fills the container;
    height is the figure's layout height, else 525 px. ``on_load``: draw it when the page has
    loaded, for figures placed before the page's plotly.js (a notebook report embeds it with its
    first plotly output, and a widget panel can come earlier).
    """
    import plotly.io as pio

    page = pio.to_html(
        dict(figure),
        include_plotlyjs=False,
        include_mathjax=False,
        full_html=False,
        validate=False,
        default_width="100%",
        default_height=525,
    )
    if on_load:
        page = _SCRIPT.sub(
            lambda m: f'{m.group(1)}window.addEventListener("load", function () {{{m.group(2)}}});{m.group(3)}', page
        )
    return page


_SCRIPT = re.compile(r"(<script[^>]*>)(.*?)(</script>)", re.DOTALL)


def plotlyjs_script() -> str:
    """A `<script>` element holding the whole plotly.js library (about 5 MB), for a page's head."""
    from plotly.offline import get_plotlyjs

    return f"<script>window.PlotlyConfig = {{MathJaxConfig: 'local'}};</script>\n<script>{get_plotlyjs()}</script>"


def offline_html_exporter():
    """nbconvert `HTMLExporter` (lab template) that loads no script from a CDN; its pages load
    MathJax from `mathjax/` beside them (`install_mathjax`)."""
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter

    return HTMLExporter(
        template_name="lab",
        extra_loaders=[DictLoader({OFFLINE_TEMPLATE: _OFFLINE_TEMPLATE_SOURCE})],
        template_file=OFFLINE_TEMPLATE,
        mathjax_url=MATHJAX_URL,
    )


def install_mathjax(folder: str | Path) -> Path:
    """Copy MathJax (about 12 MB, from `jupyter-server-mathjax`) into `folder/mathjax` unless it is
    there already; returns that folder. Pages in `folder` load it through `MATHJAX_URL`."""
    try:
        from jupyter_server_mathjax.app import STATIC_ASSETS_PATH
    except ImportError as error:
        raise ImportError(
            "HTML reports typeset formulas with MathJax from the package jupyter-server-mathjax; "
            "install it: pip install -r requirements.txt"
        ) from error
    target = Path(folder) / MATHJAX_FOLDER
    if not (target / "MathJax.js").is_file():
        shutil.copytree(STATIC_ASSETS_PATH, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def external_resources(page: str) -> list[str]:
    """URLs on other hosts that `page` would load (scripts, styles, images, frames, CSS imports)."""
    return [a or b for a, b in _EXTERNAL.findall(page)]
