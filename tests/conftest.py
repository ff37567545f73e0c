"""Suite-wide settings."""

import os
import tempfile

import pytest
import torch

# pytest-xdist runs two workers on two cores, and the browser test adds a Streamlit server: with
# torch's default of one OpenMP thread per core in every process, spinning threads oversubscribe
# the machine many times over. One intra-op thread per process keeps the suite's CPU use honest.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)

# The app keeps trained nets and sweep results in a run store (~/.resnet-lens by default): the suite
# uses a fresh folder per process so it neither reads nor pollutes the user's.
os.environ["RESNET_LENS_HOME"] = tempfile.mkdtemp(prefix="resnet-lens-test-")


@pytest.fixture(autouse=True)
def own_main_module():
    """``sys.modules["__main__"]`` as it was before each test: Streamlit's script runner puts the
    script it runs there (AppTest's own, a temporary file calling ``page(*__args)`` for
    ``from_function``) and leaves it, and a process pool started later in the same worker makes its
    children re-run ``__main__``'s file: that temporary script then dies with a NameError and the
    pool breaks (a CI flake that depended on which tests shared a worker)."""
    import sys

    main = sys.modules.get("__main__")
    try:
        yield
    finally:
        if main is not None:
            sys.modules["__main__"] = main


@pytest.fixture(scope="session", autouse=True)
def shared_datasets(tmp_path_factory):
    """Generated datasets (MNIST-1D, ~3 s to make) are cached once per test process, not in every
    test's fresh home and never in the user's ~/.resnet-lens."""
    folder = tmp_path_factory.mktemp("datasets")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RESNET_LENS_DATASETS", str(folder))
        yield folder


@pytest.fixture
def own_run_store(tmp_path_factory, monkeypatch):
    """An empty run store for one test, so runs trained by another test never show up (page tests
    use it: ``pytestmark = pytest.mark.usefixtures("own_run_store")``)."""
    from ui import cache

    monkeypatch.setenv("RESNET_LENS_HOME", str(tmp_path_factory.mktemp("home")))
    cache.run_store.clear()
    yield
    cache.run_store.clear()
