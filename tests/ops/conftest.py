import shutil
import tempfile

import pytest


@pytest.fixture
def short_dir():
    """A short temp dir: AF_UNIX paths are limited to 107 bytes, pytest's tmp_path can be longer."""
    d = tempfile.mkdtemp(prefix="sk", dir="/tmp")
    yield __import__("pathlib").Path(d)
    shutil.rmtree(d, ignore_errors=True)
