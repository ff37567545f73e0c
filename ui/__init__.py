"""Streamlit-side helpers: cached wrappers, shared widgets and plotly renderers."""
