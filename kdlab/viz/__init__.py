"""plotly figures and ipywidgets panels used by the notebooks."""
