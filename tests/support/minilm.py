"""The offline MiniLM model for tests: built once per test process (about two seconds) into a temp dir."""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

from weights.embedder import Embedder
from weights.minilm import build_model


@functools.cache
def model_dir() -> Path:
    """A built model folder, shared by every test of this process (read it, do not change it)."""
    root = Path(tempfile.mkdtemp(prefix="orch-minilm-"))
    atexit.register(shutil.rmtree, root, True)
    return build_model(root / "minilm")


@functools.cache
def embedder() -> Embedder:
    return Embedder.load(model_dir())


def copy_model(dest: Path) -> Path:
    """A private copy of the built model (for tests that damage it)."""
    shutil.copytree(model_dir(), dest)
    return dest
