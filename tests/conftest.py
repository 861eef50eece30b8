"""Shared fixtures.

Tests that need the real data read it from ``$TRANSFEREMBED_TEST_DATA`` (the
``shared/data`` folder beside the checkout, set by ``.ci/run``) and are
skipped only when it is unset, as on a user's fresh clone.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

DATA_ENV = "TRANSFEREMBED_TEST_DATA"
MOBILENET_025 = "mobilenet_2_5_224_tf_no_top.h5"


@pytest.fixture(scope="session")
def _session_store(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("converted")


@pytest.fixture(autouse=True)
def _isolated_cache(request, tmp_path_factory, monkeypatch, _session_store):
    """Every test gets its own cache folder, never the user's. The converted models in it
    are the session's (each conversion costs a process and seconds), except in tests
    marked ``own_store``."""
    cache = tmp_path_factory.mktemp("cache")
    if request.node.get_closest_marker("own_store") is None:
        (cache / "converted").symlink_to(_session_store, target_is_directory=True)
    monkeypatch.setenv("TRANSFEREMBED_CACHE_DIR", str(cache))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``shared/data``; the test is skipped when ``$TRANSFEREMBED_TEST_DATA`` is unset."""
    value = os.environ.get(DATA_ENV)
    if not value:
        pytest.skip(f"${DATA_ENV} is not set")
    path = Path(value)
    assert path.is_dir(), f"${DATA_ENV}={value} is not a folder"
    return path


@pytest.fixture
def empty_keras_home(tmp_path, monkeypatch) -> Path:
    """A ``$KERAS_HOME`` with no weights in it."""
    home = tmp_path / "keras_home"
    (home / "models").mkdir(parents=True)
    monkeypatch.setenv("KERAS_HOME", str(home))
    return home


@pytest.fixture
def mobilenet_keras_home(shared_data, empty_keras_home) -> Path:
    """A ``$KERAS_HOME`` holding the real MobileNet 0.25 ImageNet weights,
    so that ``weights="imagenet"`` loads them with no network."""
    shutil.copy(shared_data / "weights" / MOBILENET_025, empty_keras_home / "models")
    return empty_keras_home


@pytest.fixture(scope="session")
def hymenoptera(shared_data) -> Path:
    return shared_data / "images" / "hymenoptera"


@pytest.fixture(scope="session")
def seed_toy(shared_data) -> Path:
    return shared_data / "seed-toy"
