"""Shared fixtures: every test starts with an empty action registry, so
tests can define actions freely without colliding with each other."""

import os

import pytest

import cairn
from cairn.actions import PLUGIN

#: The repository root (for the shared contract files and the examples).
REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))


@pytest.fixture(autouse=True)
def clean_registry():
    cairn.registry.reset()
    PLUGIN.module = PLUGIN.where = None
    yield
    cairn.registry.reset()
    PLUGIN.module = PLUGIN.where = None
