"""ResNet Lens: routing only. Each page lives in pages/."""

import streamlit as st

st.set_page_config(page_title="ResNet Lens", layout="wide")

PAGES = [
    st.Page("pages/explorer.py", title="Architecture explorer", default=True),
    st.Page("pages/blocks.py", title="Block comparison"),
    st.Page("pages/depth.py", title="Depth comparison"),
    st.Page("pages/diagrams.py", title="Shortcut diagrams"),
]

st.navigation(PAGES).run()
