"""Fixtures of the pytest-benchmark suites: the Cython core and the
pure-Python twin of the same VM, built side by side so one run measures both."""
import pytest


@pytest.fixture(scope="module")
def core():
    return pytest.importorskip("vgic._core.mmio")


@pytest.fixture(scope="module")
def pure():
    from vgic._pure import mmio
    return mmio


@pytest.fixture(params=["core", "pure"], ids=["core", "twin"])
def impl(request, core, pure):
    """Each benchmark runs once on the core and once on the twin (the backend name)."""
    return request.param
