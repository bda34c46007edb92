"""Shared fixtures: where the test data and the authors' checkpoints are.

Test data come from ``ZOO_TEST_DATA`` (default ``../shared/data`` beside the checkout) and the
authors' checkpoints from ``ZOO_UPSTREAM`` (default: ``upstream`` beside the data folder). A test
that needs them is skipped with the reason when they are absent, unless
``ZOO_REQUIRE_TEST_DATA=1`` (CI), which turns that skip into a failure.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _data_dir() -> Path:
    return Path(os.environ.get("ZOO_TEST_DATA") or ROOT.parent / "shared" / "data").resolve()


def _upstream_dir() -> Path:
    env = os.environ.get("ZOO_UPSTREAM")
    return Path(env).resolve() if env else _data_dir().parent / "upstream"


def need(path: Path, what: str) -> Path:
    """Return ``path`` if it exists; otherwise skip (or fail under ZOO_REQUIRE_TEST_DATA=1)."""
    if path.exists():
        return path
    msg = f"{what} not found at {path} (set ZOO_TEST_DATA / ZOO_UPSTREAM)"
    if os.environ.get("ZOO_REQUIRE_TEST_DATA", "") not in ("", "0"):
        pytest.fail(msg + " and ZOO_REQUIRE_TEST_DATA=1")
    pytest.skip(msg)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return need(_data_dir(), "test data folder")


@pytest.fixture(scope="session")
def upstream_dir() -> Path:
    return need(_upstream_dir(), "upstream checkpoints folder")


@pytest.fixture(scope="session")
def set5_dir(data_dir: Path) -> Path:
    return need(data_dir / "sr" / "Set5", "Set5")


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield


@pytest.fixture()
def zoo_cache(tmp_path, monkeypatch) -> Path:
    """An empty, private zoo weight cache, with downloads switched off."""
    cache = tmp_path / "zoo-cache"
    monkeypatch.setenv("ZOO_CACHE", str(cache))
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    return cache
