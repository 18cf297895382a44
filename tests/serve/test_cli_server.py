"""``samspt-serve`` as an operator runs it: foreground, logs where it listens, serves the
shipped example model with no argument, stops cleanly on SIGINT and on SIGTERM."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time

import pytest

from tests.serve.conftest import free_port

requests = pytest.importorskip("requests")

START_TIMEOUT_S = 180
STOP_TIMEOUT_S = 60


def _start(port: int, *flags: str, env=None):
    process = subprocess.Popen(
        [sys.executable, "-m", "samspt.serve.server", "--port", str(port),
         "--cpus-per-replica", "0.5", *flags],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
    lines: "queue.Queue[str]" = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout],
                     daemon=True).start()
    return process, lines


def _read_until(lines, text: str, timeout_s: float, seen):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=1)
        except queue.Empty:
            continue
        seen.append(line)
        if text in line:
            return line
    raise AssertionError(f"{text!r} not logged within {timeout_s} s:\n{''.join(seen[-30:])}")


@pytest.mark.parametrize("stop_signal,ingress", [(signal.SIGINT, "auto"),
                                                 (signal.SIGTERM, "proxy")])
@pytest.mark.service
def test_samspt_serve_runs_in_the_foreground_and_stops_on_a_signal(stop_signal, ingress):
    from samspt.serve.ingress import resolve_ingress

    port = free_port()
    process, lines = _start(port, "--max-batch", "4", "--batch-wait-ms", "2",
                            "--ingress", ingress)
    seen = []
    try:
        listening = _read_until(lines, "listening on", START_TIMEOUT_S, seen)
        assert f"http://127.0.0.1:{port}/" in listening and "metrics http://" in listening
        assert f"ingress {resolve_ingress(ingress)};" in listening, listening
        health = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=10).json()
        assert health["status"] == "ok" and health["model"] == "example_cnn"
        model = requests.get(f"http://127.0.0.1:{port}/v1/model", timeout=10).json()
        assert model["batching"] == {"max_batch": 4, "batch_wait_ms": 2.0,
                                     "across_requests": True}
        assert process.poll() is None, "samspt-serve must stay in the foreground"
        process.send_signal(stop_signal)
        assert process.wait(STOP_TIMEOUT_S) == 0
        rest = "".join(seen)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and "stopped" not in rest:
            try:
                rest += lines.get(timeout=0.5)
            except queue.Empty:
                pass
        assert f"{stop_signal.name} received" in rest and "stopped" in rest, rest[-2000:]
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(30)


@pytest.mark.integration
def test_samspt_serve_refuses_a_missing_model_folder_with_a_fix(tmp_path):
    result = subprocess.run([sys.executable, "-m", "samspt.serve.server",
                             str(tmp_path / "nothing")], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2
    assert "does not exist" in result.stderr and "samspt-export" in result.stderr


@pytest.mark.integration
def test_samspt_serve_refuses_a_taken_port_before_starting_ray():
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        start = time.monotonic()
        result = subprocess.run([sys.executable, "-m", "samspt.serve.server", "--port",
                                 str(port)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "--port" in result.stderr and "Started a local Ray" not in result.stderr
    assert time.monotonic() - start < 60


@pytest.mark.service
def test_samspt_serve_joins_a_running_cluster_and_leaves_it_running():
    """--address: the application goes onto a cluster started with `ray start --head`; stopping
    samspt-serve deletes the application, and the cluster (its Serve proxy) keeps running."""
    ray_bin = os.path.join(os.path.dirname(sys.executable), "ray")
    gcs_port, http_port = free_port(), free_port()
    # a throwaway local cluster: no token to hand around (Ray's default for `ray start`)
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    head = subprocess.Popen([ray_bin, "start", "--head", "--block", "--port", str(gcs_port),
                             "--num-cpus", "2", "--include-dashboard", "false"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, env=env)
    process = None
    try:
        process, lines = _start(http_port, "--address", f"127.0.0.1:{gcs_port}",
                                env={"RAY_AUTH_MODE": "disabled"})
        seen = []
        listening = _read_until(lines, "listening on", START_TIMEOUT_S, seen)
        assert "ingress the cluster's" in listening, listening
        assert "Connected to Ray cluster" in "".join(seen)
        health = requests.get(f"http://127.0.0.1:{http_port}/healthz", timeout=10)
        assert health.status_code == 200 and health.json()["model"] == "example_cnn"
        process.send_signal(signal.SIGTERM)
        assert process.wait(STOP_TIMEOUT_S) == 0
        assert head.poll() is None, "stopping samspt-serve must leave the cluster running"
        # the cluster's Serve still answers on the port, without the application
        gone = requests.get(f"http://127.0.0.1:{http_port}/healthz", timeout=10)
        assert gone.status_code == 404
    finally:
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(30)
        os.killpg(head.pid, signal.SIGTERM)      # `ray start --block` stops what it started
        try:
            head.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait(30)
