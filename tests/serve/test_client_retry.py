"""The Client sends a request again when its connection is closed before an answer (what
HAProxy does to a request whose replica died), and never when it timed out. A real socket
server on localhost: it closes the first ``drops`` connections unanswered, then answers."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from samspt.runtime.errors import InputError
from samspt.serve.client import Client, ServiceError

pytest.importorskip("requests")


class DroppingServer:
    def __init__(self, drops: int, delay_s: float = 0.0) -> None:
        self.drops, self.delay_s, self.connections = drops, delay_s, 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                self.connections += 1
                conn.recv(65536)
                if self.connections <= self.drops:
                    continue                        # closed without an answer
                time.sleep(self.delay_s)
                body = json.dumps({"status": "ok", "model": "x"}).encode()
                try:
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                 b"Connection: close\r\nContent-Length: " +
                                 str(len(body)).encode() + b"\r\n\r\n" + body)
                except OSError:
                    pass

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def server_factory():
    servers = []

    def make(drops: int, delay_s: float = 0.0) -> DroppingServer:
        servers.append(DroppingServer(drops, delay_s))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


def test_a_dropped_connection_is_sent_again_and_answered(server_factory):
    server = server_factory(drops=1)
    assert Client(server.url, timeout_s=5).health() == {"status": "ok", "model": "x"}
    assert server.connections == 2


def test_retries_are_bounded_and_the_error_says_what_happened(server_factory):
    server = server_factory(drops=5)
    with pytest.raises(ServiceError, match="did not answer GET /healthz"):
        Client(server.url, timeout_s=5, retries=2, retry_wait_s=0.01).health()
    assert server.connections == 3
    once = server_factory(drops=1)
    with pytest.raises(ServiceError):
        Client(once.url, timeout_s=5, retries=0).health()
    assert once.connections == 1


def test_a_timed_out_request_is_not_sent_again(server_factory):
    server = server_factory(drops=0, delay_s=1.5)
    with pytest.raises(ServiceError, match="timed out"):
        Client(server.url, timeout_s=0.5, retries=3).health()
    time.sleep(0.1)
    assert server.connections == 1


@pytest.mark.parametrize("retries", [-1, 1.5, True, "2"])
def test_bad_retries_are_refused(retries):
    with pytest.raises(InputError, match="retries must be an int >= 0"):
        Client("http://127.0.0.1:9", retries=retries)
