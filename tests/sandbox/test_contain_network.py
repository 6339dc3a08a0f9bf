"""No network: neither the host's loopback services nor the outside world."""

from __future__ import annotations

import socket

import sandbox

from .conftest import needs_bwrap

pytestmark = needs_bwrap

CONNECT = """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.settimeout(1)
try:
    s.connect(("{host}", {port}))
    print("connected")
except OSError as e:
    print("failed", type(e).__name__)
"""


def test_host_loopback_service_is_unreachable():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.setblocking(False)
    port = server.getsockname()[1]
    try:
        r = sandbox.run(CONNECT.format(host="127.0.0.1", port=port), timeout_s=5.0)
        # The sandbox has its own loopback, down and empty: nothing listens there.
        assert r.stdout.startswith("failed"), (r.stdout, r.stderr)
        try:
            server.accept()
            raise AssertionError("the host server accepted a connection from the sandbox")
        except BlockingIOError:
            pass  # no pending connection: the expected outcome
    finally:
        server.close()


def test_outside_world_is_unreachable():
    r = sandbox.run(CONNECT.format(host="1.1.1.1", port=53), timeout_s=5.0)
    assert r.stdout.startswith("failed"), (r.stdout, r.stderr)


def test_only_loopback_interface_exists():
    r = sandbox.run("import socket\nprint(sorted(n for _, n in socket.if_nameindex()))")
    assert r.stdout == "['lo']\n"


def test_name_resolution_fails():
    r = sandbox.run("import socket\ntry:\n    socket.getaddrinfo('example.com', 80)\n    print('resolved')\n"
                    "except OSError as e:\n    print('failed')", timeout_s=5.0)
    assert r.stdout == "failed\n"
