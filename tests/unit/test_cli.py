"""The threads a command uses by default: the cores it may run on, not every core of the machine."""

from __future__ import annotations

import os

from csplade_pyserini import cli


def test_default_threads_follow_affinity_and_omp_num_threads(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3}, raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert cli.available_cores() == 1 and cli.default_threads() == 1
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    assert cli.available_cores() in (1, 2, 3, 4)  # a container's CPU quota may cap it further
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert cli.default_threads() == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "many")
    assert cli.default_threads() == cli.available_cores()


def test_passive_openmp_is_chosen_before_torch_loads_and_a_users_value_wins(monkeypatch):
    import sys

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.setitem(sys.modules, "torch", sys)  # torch loaded: too late to change OpenMP, left alone
    cli.prefer_passive_openmp()
    assert "OMP_WAIT_POLICY" not in os.environ
    monkeypatch.delitem(sys.modules, "torch")
    cli.prefer_passive_openmp()
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    cli.prefer_passive_openmp()
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
