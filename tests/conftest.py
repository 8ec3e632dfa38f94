"""Helpers and fixtures shared by the test files: the app's config composed in process, and
an empty MLflow SQLite store to copy."""

from __future__ import annotations

import shutil
from pathlib import Path

import mlflow
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"


def compose_cfg(*overrides: str, hydra: bool = False) -> DictConfig:
    """The config `python run.py OVERRIDES` composes (with the ``hydra`` node if ``hydra``)."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=hydra)


@pytest.fixture(scope="module")
def empty_db(tmp_path_factory) -> Path:
    """An MLflow SQLite database with its tables but no experiment (creating one is slow)."""
    path = tmp_path_factory.mktemp("template") / "mlflow.db"
    mlflow.MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def db(tmp_path, empty_db) -> str:
    """The URI of a copy of :func:`empty_db` in ``tmp_path/mlflow.db``."""
    shutil.copy(empty_db, tmp_path / "mlflow.db")
    return f"sqlite:///{tmp_path / 'mlflow.db'}"
