"""ResNet Lens library: specs, builder, costs, diagrams, data, training, checkpoints, lesions, paths.

Pure Python and PyTorch; never imports Streamlit (the app lives in app.py, app_pages/ and ui/).
"""

# specs first: its table of built-in nets is checked against their net plans (analysis.arch.blockplan),
# which import specs' types. Loading specs before any other module lets blockplan find those types
# defined, whichever module a caller imports first.
from analysis.arch import specs as specs
