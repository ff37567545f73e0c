"""ResNet Lens: routing only. Each page lives in app_pages/.

The folder is deliberately not called ``pages/``: Streamlit treats a ``pages/`` folder beside the
entry point as a legacy (v1) multipage app until some session has called ``st.navigation``, so on a
fresh server a deep link such as ``/diagrams?model=resnet152`` would run the page without this router.
"""

import streamlit as st

import ui.runtime  # noqa: F401  (process-wide settings, applied once: one torch thread per session)

st.set_page_config(page_title="ResNet Lens", layout="wide")

PAGES = [
    st.Page("app_pages/explorer.py", title="Architecture explorer", default=True),
    st.Page("app_pages/blocks.py", title="Block comparison"),
    st.Page("app_pages/depth.py", title="Depth comparison"),
    st.Page("app_pages/diagrams.py", title="Shortcut diagrams"),
    st.Page("app_pages/training.py", title="Training"),
    st.Page("app_pages/lesion.py", title="Lesion lab"),
    st.Page("app_pages/paths.py", title="Path ensemble"),
    st.Page("app_pages/theory.py", title="Why shortcuts work"),
]

st.navigation(PAGES).run()
