"""Serving the portal: cheroot (CherryPy's WSGI server) with TLS, one process, threads.

One process rather than gunicorn's master and workers: measured here on a bare Flask app,
gunicorn with one threaded worker takes 60 MB RSS for its two processes against 36 MB for
cheroot, and the portal's whole budget is 40 MB (bench/portal.py: 39 MB after a year view). Threads suit the work: short SQLite reads and a few long-lived
live streams, each holding one thread (bounded by ``max_streams``).
"""

from __future__ import annotations

import logging
import signal
import ssl
import threading
from types import FrameType

from cheroot import wsgi
from cheroot.ssl.builtin import BuiltinSSLAdapter

from portal.app import create_app
from portal.privileges import check_identity
from portal.settings import PortalSettings
from portal.tlscert import ensure_certificate

log = logging.getLogger("smgw.portal")


def build_server(settings: PortalSettings) -> tuple[wsgi.Server, threading.Event]:
    """The server and the event that ends its live streams."""
    fingerprint = ensure_certificate(settings.tls_cert, settings.tls_key, settings.address, settings.gateway_id)
    app = create_app(settings)
    stopping = app.extensions["smgw_portal"].stopping
    server = wsgi.Server((settings.address, settings.port), app, numthreads=settings.threads,
                         max=settings.threads, request_queue_size=32, timeout=30, shutdown_timeout=2,
                         server_name="smgw-portal")
    adapter = BuiltinSSLAdapter(str(settings.tls_cert), str(settings.tls_key))
    adapter.context.minimum_version = ssl.TLSVersion.TLSv1_2
    server.ssl_adapter = adapter
    server.error_log = _quiet_error_log  # type: ignore[method-assign]
    log.info("portal on https://%s:%d (certificate SHA-256 %s)", settings.address, settings.port, fingerprint)
    return server, stopping


def _quiet_error_log(msg: str = "", level: int = 20, traceback: bool = False) -> None:
    """cheroot's error log without the tracebacks of clients that went away (a closed live
    stream, a browser's abandoned TLS connection): one line each, at debug level."""
    gone = ("SSLEOFError", "BrokenPipeError", "ConnectionResetError", "EOF occurred")
    if traceback and any(word in msg for word in gone):
        log.debug("client went away: %s", msg.splitlines()[0] if msg else "")
        return
    log.log(level, "%s", msg, exc_info=traceback)


def serve(settings: PortalSettings, stop: threading.Event | None = None) -> None:
    """Serve until SIGTERM/SIGINT (or ``stop`` is set)."""
    check_identity(settings.store)
    server, stopping = build_server(settings)
    server.prepare()
    halt = stop or threading.Event()

    def _signal(_signo: int, _frame: FrameType | None) -> None:
        halt.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _signal)
        signal.signal(signal.SIGINT, _signal)
    runner = threading.Thread(target=server.serve, name="portal-serve", daemon=True)
    runner.start()
    halt.wait()
    stopping.set()  # live streams end at their next poll, so stop() need not wait on them
    server.stop()
