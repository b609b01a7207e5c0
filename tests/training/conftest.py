"""Training tests share the one-thread fixture of the model tests."""

from models.conftest import single_torch_thread  # noqa: F401
