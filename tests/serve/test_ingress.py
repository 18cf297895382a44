"""Choosing how HTTP reaches the replicas (samspt.serve.ingress): the modes, the refusals, and
the environment a local Ray starts with."""

from __future__ import annotations

import os
import stat

import pytest

from samspt.runtime.errors import ConfigError
from samspt.serve.ingress import (INGRESS_MODES, haproxy_binary, ingress_environment,
                                  ray_has_haproxy_mode, resolve_ingress)


def test_unknown_mode_is_refused_with_the_choices():
    with pytest.raises(ConfigError, match="unknown ingress 'nginx'.*auto, haproxy, proxy"):
        resolve_ingress("nginx")
    assert INGRESS_MODES == ("auto", "haproxy", "proxy")


def test_proxy_is_always_available():
    assert resolve_ingress("proxy") == "proxy"


def test_without_a_binary_auto_falls_back_and_haproxy_says_how_to_get_one(tmp_path, monkeypatch):
    not_executable = tmp_path / "haproxy"
    not_executable.write_text("")
    monkeypatch.setenv("RAY_SERVE_HAPROXY_BINARY_PATH", str(not_executable))
    assert haproxy_binary() is None
    assert resolve_ingress("auto") == "proxy"
    with pytest.raises(ConfigError, match="--ingress proxy"):
        resolve_ingress("haproxy")


@pytest.mark.skipif(not ray_has_haproxy_mode(), reason="this Ray Serve has no HAProxy mode")
def test_an_executable_named_by_ray_s_override_is_taken(tmp_path, monkeypatch):
    binary = tmp_path / "haproxy"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(binary.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("RAY_SERVE_HAPROXY_BINARY_PATH", str(binary))
    assert haproxy_binary() == str(binary)
    assert resolve_ingress("auto") == resolve_ingress("haproxy") == "haproxy"


def test_the_environment_is_set_for_ray_and_restored_after(monkeypatch):
    monkeypatch.setenv("RAY_SERVE_ENABLE_HA_PROXY", "0")
    monkeypatch.delenv("RAY_SERVE_THROUGHPUT_OPTIMIZED", raising=False)
    with ingress_environment("haproxy"):
        assert os.environ["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
        assert os.environ["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "1"
    assert os.environ["RAY_SERVE_ENABLE_HA_PROXY"] == "0"
    assert "RAY_SERVE_THROUGHPUT_OPTIMIZED" not in os.environ
    with ingress_environment("proxy"):
        assert os.environ["RAY_SERVE_ENABLE_HA_PROXY"] == "0"
        assert os.environ["RAY_SERVE_ENABLE_DIRECT_INGRESS"] == "0"
    with pytest.raises(ConfigError, match="resolve it first"):
        with ingress_environment("auto"):
            pass


def test_the_package_service_runs_on_the_ingress_auto_picks(main_service):
    assert main_service.ingress == resolve_ingress("auto")
