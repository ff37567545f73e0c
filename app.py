"""ResNet Lens: routing only. Each page lives in app_pages/.

The folder is deliberately not called ``pages/``: Streamlit treats a ``pages/`` folder beside the
entry point as a legacy (v1) multipage app until some session has called ``st.navigation``, so on a
fresh server a deep link such as ``/diagrams?model=resnet152`` would run the page without this router.

Every page's settings follow it in the URL (ui/urlstate.py), so any view can be shared as a link;
an address that is no page says so instead of silently showing the default page.
"""

import streamlit as st

import ui.runtime  # noqa: F401  (process-wide settings, applied once: one torch thread per session)
from ui import urlstate

st.set_page_config(page_title="ResNet Lens", layout="wide")

DEFAULT = "explorer"  # the page at the root URL, also reachable as /explorer
PAGES = [
    st.Page("app_pages/explorer.py", title="Architecture explorer", default=True),
    st.Page("app_pages/blocks.py", title="Block comparison"),
    st.Page("app_pages/depth.py", title="Depth comparison"),
    st.Page("app_pages/diagrams.py", title="Shortcut diagrams"),
    st.Page("app_pages/training.py", title="Training"),
    st.Page("app_pages/lesion.py", title="Lesion lab"),
    st.Page("app_pages/paths.py", title="Path ensemble"),
    st.Page("app_pages/painters.py", title="Layers as painters"),
    st.Page("app_pages/theory.py", title="Why shortcuts work"),
    st.Page("app_pages/variants.py", title="Variants lab"),
    st.Page("app_pages/transfer.py", title="Transfer learning"),
]

page = st.navigation(PAGES)
name = page.url_path or DEFAULT
missing = urlstate.unknown_path(page, aliases=[name])
if missing is not None:
    urlstate.show_pages(missing, PAGES)
else:
    urlstate.run(page, name)
