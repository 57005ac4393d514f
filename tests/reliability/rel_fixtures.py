"""Fixtures of the reliability and security suites (imported by both conftest.py files): one
emulator per test module over a private store (harness.RelHub), put back to a running,
fault-free state before each test, and the module's figures written when the module ends."""
import os

import pytest

import harness


@pytest.fixture(scope="module")
def relhub(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("rel-hub"))
    hub = harness.RelHub(root).start()
    yield hub
    hub.close()


@pytest.fixture
def hub(relhub):
    relhub.ensure_running()
    yield relhub
    relhub.ensure_running()


@pytest.fixture(scope="module")
def figures(request):
    fig = harness.Figures(os.path.splitext(os.path.basename(request.module.__file__))[0])
    yield fig
    fig.save()
