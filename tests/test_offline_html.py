"""HTML that loads nothing from other hosts: plotly's renderer and nbconvert's template, adjusted."""

from __future__ import annotations

import plotly.graph_objects as go
import plotly.io as pio
from nbconvert import HTMLExporter
from nbformat.v4 import new_markdown_cell, new_notebook

from kdlab.report import notebook_runner as nr
from kdlab.report import offline_html as oh


def test_external_resources_finds_loads_but_not_links_or_local_files():
    page = """
    <script src="https://cdnjs.cloudflare.com/ajax/libs/require.js/2.1.10/require.min.js"></script>
    <link rel="stylesheet" href="//fonts.example.org/font.css">
    <style>@import url("https://fonts.example.org/other.css");</style>
    <img alt="x" src='http://img.example.org/a.png'>
    <a href="https://plotly.com/">a link is not a load</a>
    <script src="html/local.js"></script><img src="data:image/png;base64,AAAA">
    """
    assert oh.external_resources(page) == [
        "https://cdnjs.cloudflare.com/ajax/libs/require.js/2.1.10/require.min.js",
        "//fonts.example.org/font.css",
        "https://fonts.example.org/other.css",
        "http://img.example.org/a.png",
    ]
    assert oh.external_resources(oh.plotlyjs_script()) == []


def test_renderer_draws_figures_without_mathjax_from_a_cdn():
    figure = go.Figure(go.Bar(y=[1, 2]))
    stock = pio.renderers["notebook"].to_mimebundle(figure.to_dict())["text/html"]
    assert oh.external_resources(stock)  # what plotly's own notebook renderer does
    bundle = oh.OfflineNotebookRenderer().to_mimebundle(figure.to_dict())
    assert oh.external_resources(bundle["text/html"]) == []
    assert bundle["text/html"].count("Plotly.newPlot(") == 1 and nr.plotlyjs_bundle_count(bundle["text/html"]) == 0


def test_use_embedded_plotly_selects_the_offline_renderer():
    default = pio.renderers.default
    try:
        nr.use_embedded_plotly()
        assert pio.renderers.default == nr.PLOTLY_RENDERER
        assert isinstance(pio.renderers[nr.OFFLINE_RENDERER], oh.OfflineNotebookRenderer)
    finally:
        pio.renderers.default = default


def test_exporter_leaves_out_the_cdn_scripts_of_the_lab_template():
    notebook = new_notebook(cells=[new_markdown_cell("# Title\n\nsome $x^2$ math")])
    notebook.metadata["widgets"] = {
        "application/vnd.jupyter.widget-state+json": {"state": {}, "version_major": 2, "version_minor": 0}
    }
    stock, _ = HTMLExporter(template_name="lab").from_notebook_node(notebook)
    assert oh.external_resources(stock)  # require.js and MathJax from cdnjs
    page, _ = oh.offline_html_exporter().from_notebook_node(notebook)
    assert oh.external_resources(page) == []
    assert "unpkg.com" not in page and "cdnjs" not in page  # widget manager and mermaid loaders are gone too
    assert "jp-MarkdownCell" in page and "some $x^2$ math" in page  # the lab look stays; math stays as source
