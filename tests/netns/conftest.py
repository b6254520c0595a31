"""Fixtures the namespace tests share: a module's LAN and the agents on it.

A module names its LAN with a ``lan`` mark beside its other marks, and sets ``ADVERT``
(seconds between adverts; its timing bounds are computed from the same constant, so
the agents and the bounds cannot disagree):

    pytestmark = [pytest.mark.netns, pytest.mark.slow, pytest.mark.lan("el", nodes=3, net=10)]
    ADVERT = 0.1

``lan``: that ``lab.lan.Lan``, up for the test and torn down after it (also when
building it failed half-way). ``agents(lan, node, workdir_name="", **instance_config
kw)``: a ``lab.agents.AgentProc``, not started, with one instance advertising every
``ADVERT`` seconds; every agent made is stopped after the test.
"""

from __future__ import annotations

import pytest

from lab.agents import agent_factory
from lab.lan import Lan


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "lan(tag, nodes=, net=, ...): the lab.lan.Lan the `lan` fixture builds")


@pytest.fixture
def lan(request):
    mark = request.node.get_closest_marker("lan")
    if mark is None:
        raise pytest.UsageError(f"{request.node.nodeid}: the `lan` fixture needs a pytest.mark.lan(tag, ...) mark")
    lab = Lan(*mark.args, **mark.kwargs)
    try:
        yield lab.up()
    finally:
        lab.down()


@pytest.fixture
def agents(request, tmp_path):
    advert = getattr(request.module, "ADVERT", None)
    if advert is None:
        raise pytest.UsageError(f"{request.node.nodeid}: the `agents` fixture needs the module's ADVERT")
    with agent_factory(tmp_path, advert) as make:
        yield make
