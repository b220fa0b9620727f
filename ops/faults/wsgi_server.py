"""The API on loopback without gunicorn: the stdlib's WSGI server, one thread per request.

Usage: python ops/faults/wsgi_server.py PORT (the environment configures Django).
"""

from __future__ import annotations

import sys
from pathlib import Path
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))


class ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    request_queue_size = 128


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the stdlib's signature
        pass


def main() -> None:
    from controlplane.wsgi import application

    make_server("127.0.0.1", int(sys.argv[1]), application, server_class=ThreadingWSGIServer, handler_class=QuietHandler).serve_forever()


if __name__ == "__main__":
    main()
