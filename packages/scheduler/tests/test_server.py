"""create_server: the app served by waitress in this process, on a port picked for it."""

from __future__ import annotations

import dataclasses
import http.client
import json

from taskmill.scheduler import bind, create_app, create_server
from taskmill.testing import serve_in_thread


def _serve_once(server) -> dict:
    with serve_in_thread(server):
        conn = http.client.HTTPConnection("127.0.0.1", int(server.effective_port), timeout=30)
        conn.request("GET", "/healthz")
        response = conn.getresponse()
        assert response.status == 200
        body = json.loads(response.read())
        conn.close()
        return body


def test_port_0_binds_a_free_port(settings, db) -> None:
    settings = dataclasses.replace(settings, host="127.0.0.1", port=0, threads=2)

    server = create_server(create_app(settings, db), settings)

    assert int(server.effective_port) > 0
    assert _serve_once(server)["status"] == "ok"


def test_a_socket_bound_beforehand_is_served(settings, db) -> None:
    sock = bind("127.0.0.1", 0)
    settings = dataclasses.replace(settings, threads=2)

    server = create_server(create_app(settings, db), settings, sock)

    assert int(server.effective_port) == sock.getsockname()[1]
    assert _serve_once(server)["status"] == "ok"
