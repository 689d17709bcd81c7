"""Static HTML for saved ipywidgets views: reports show widget panels without a widget manager.

A notebook executed headless stores its widgets' last state in `metadata.widgets`, and each
widget output holds only a reference (`model_id`); drawing it needs the ipywidgets HTML
manager and each widget's JavaScript, which come from a CDN. `snapshot_widget_views` returns a
copy of the notebook whose widget outputs are plain HTML built from that state instead:

- boxes lay out their children (VBox: a column, other boxes: a row);
- controls show `description: value` (dropdowns and other selections: the chosen label);
- HTML and Label widgets show their content; Audio, Image and Video their media, inline;
- a panel's figure (an `Output` widget showing a plotly figure: `kdlab.viz.figure_pane`) shows
  the figure it last drew (`Plotly.newPlot` once the page has loaded: a panel may come before
  the report's plotly.js). The page must load plotly.js.

Other widgets show their model name. A caption says the panel is interactive in JupyterLab.
"""

from __future__ import annotations

import base64
import copy
import html

from kdlab.viz.figure_pane import output_figure

WIDGET_STATE_MIMETYPE = "application/vnd.jupyter.widget-state+json"
WIDGET_VIEW_MIMETYPE = "application/vnd.jupyter.widget-view+json"
CAPTION = (
    '<p class="kdlab-widget-caption" style="color:#666;font-size:0.9em">Interactive panel, shown as it was '
    "at the end of the run. Open the notebook in JupyterLab (<code>make lab</code>) to use its controls.</p>"
)
_MODEL_REF = "IPY_MODEL_"
_MEDIA_TAGS = {"AudioModel": ("audio", "audio"), "VideoModel": ("video", "video"), "ImageModel": ("img", "image")}
_ROW = "display:flex;flex-flow:row wrap;gap:0.4em 1.5em;align-items:center"
_COLUMN = "display:flex;flex-direction:column;gap:0.4em"


def saved_widget_state(notebook) -> dict[str, dict]:
    """`model_id -> {"model_name": ..., "state": {...}}` from `notebook.metadata.widgets` ({} if none).

    Binary values (audio bytes, plotly arrays) are put back in place as `bytes`.
    """
    saved = notebook.metadata.get("widgets", {}).get(WIDGET_STATE_MIMETYPE, {}).get("state", {})
    models = {}
    for model_id, model in saved.items():
        state = copy.deepcopy(dict(model.get("state", {})))
        for buffer in model.get("buffers", []):
            _put(state, buffer["path"], base64.b64decode(buffer["data"]))
        models[model_id] = {"model_name": model.get("model_name", "?"), "state": state}
    return models


def view_html(models: dict[str, dict], model_id: str) -> str:
    """HTML for the widget `model_id` and its children (see the module docstring)."""
    model = models.get(model_id)
    if model is None:
        return f'<span class="kdlab-widget">[widget {html.escape(model_id)} not saved]</span>'
    name, state = model["model_name"], model["state"]
    if "children" in state:
        style = _COLUMN if name == "VBoxModel" else _ROW
        children = "".join(view_html(models, _ref(child)) for child in state["children"])
        return f'<div class="kdlab-widget-box" style="{style}">{children}</div>'
    figure = _plotly_figure(state)
    if figure is not None:
        from kdlab.report.offline_html import figure_html

        return f'<div class="kdlab-widget-figure" style="width:100%">{figure_html(figure, on_load=True)}</div>'
    if name in _MEDIA_TAGS and isinstance(state.get("value"), bytes):
        tag, kind = _MEDIA_TAGS[name]
        source = f"data:{kind}/{state.get('format', '')};base64,{base64.b64encode(state['value']).decode()}"
        return f'<{tag} controls src="{source}"></{tag}>' if tag != "img" else f'<img src="{source}" alt="">'
    if name in ("HTMLModel", "HTMLMathModel"):
        return f'<span class="kdlab-widget">{state.get("value", "")}</span>'
    value = _shown_value(state)
    if value is None:
        return f'<span class="kdlab-widget">[{html.escape(name)}]</span>'
    label = state.get("description", "")
    label = f"{html.escape(label)}: " if label else ""
    return f'<span class="kdlab-widget">{label}<b>{html.escape(value)}</b></span>'


def view_figures(models: dict[str, dict], model_id: str) -> list[dict]:
    """Plotly figure dicts (`data`, `layout`) of the panel figures in widget `model_id`'s tree."""
    state = models.get(model_id, {}).get("state", {})
    if "children" in state:
        return [figure for child in state["children"] for figure in view_figures(models, _ref(child))]
    figure = _plotly_figure(state)
    return [] if figure is None else [figure]


def snapshot_widget_views(notebook):
    """A copy of `notebook` whose widget outputs are static HTML (`text/html`) built from the saved state."""
    models = saved_widget_state(notebook)
    notebook = copy.deepcopy(notebook)
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            view = output.get("data", {}).pop(WIDGET_VIEW_MIMETYPE, None)
            if view is not None:
                output["data"]["text/html"] = view_html(models, view["model_id"]) + CAPTION
    return notebook


def _ref(child: str) -> str:
    return child[len(_MODEL_REF) :] if child.startswith(_MODEL_REF) else child


def _put(state: dict, path: list, value: bytes) -> None:
    """Set `state[path[0]][path[1]]... = value`; paths into values that are gone are skipped."""
    target = state
    for key in path[:-1]:
        try:
            target = target[key]
        except (KeyError, IndexError, TypeError):
            return
    if isinstance(target, (dict, list)):
        target[path[-1]] = value


def _shown_value(state: dict) -> str | None:
    """What a control displays: the chosen label of a selection, else its value (None: no value)."""
    labels = state.get("_options_labels")
    if labels is not None:
        index = state.get("index")
        if isinstance(index, (list, tuple)):  # multiple selection
            return ", ".join(labels[i] for i in index)
        return "—" if index is None else labels[index]
    if "value" not in state or isinstance(state["value"], bytes):
        return None
    return str(state["value"])


def _plotly_figure(state: dict) -> dict | None:
    """The plotly figure an Output widget's state shows (a panel's figure), or None for other widgets."""
    return output_figure(state) if "outputs" in state else None
