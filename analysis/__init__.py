"""ResNet Lens library: specs, builder, costs, diagrams, data, training, checkpoints, lesions, paths.

Pure Python and PyTorch; never imports Streamlit (the app lives in app.py, app_pages/ and ui/).
"""
