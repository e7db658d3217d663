
import matplotlib.pyplot as plt
import pytest
import torch

# Keep test runs quick and deterministic on a 2-core machine.
# One thread: the unit tests use tiny models (no gain from more), and on a busy 2-core machine
# extra OpenMP threads spin against other processes and slow small matmuls by orders of magnitude.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tokenizer():
    from eas.models.mini_llava import load_tokenizer

    return load_tokenizer()


@pytest.fixture()
def tiny_mini_llava(tokenizer):
    from eas.models.mini_llava import MiniLlava, tiny_language_model

    torch.manual_seed(0)
    return MiniLlava(tiny_language_model(seed=0, layers=4), tokenizer, visual_grid=2).eval()


@pytest.fixture(autouse=True)
def _close_figures():
    """Figures drawn by a test (the chapters' functions return them) are closed after it."""
    yield
    plt.close("all")


@pytest.fixture()
def data_root(tmp_path, monkeypatch):
    """An empty data folder (datasets, caches, results, ledgers) for one test."""
    monkeypatch.setenv("EAS_DATA", str(tmp_path))
    return tmp_path
