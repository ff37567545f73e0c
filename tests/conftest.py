"""Suite-wide settings."""

import os

import torch

# pytest-xdist runs two workers on two cores, and the browser test adds a Streamlit server: with
# torch's default of one OpenMP thread per core in every process, spinning threads oversubscribe
# the machine many times over. One intra-op thread per process keeps the suite's CPU use honest.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)
