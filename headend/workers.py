"""Several ingest processes on one port: verification and decryption are CPU-bound, and one
Python process uses one core. Each worker builds its own server (``SO_REUSEPORT``: the kernel
spreads the connections) and its own database connection after the fork, so nothing is
shared but the database itself, and what evens out their connections (``headend.balance``,
made before the fork). The parent only watches: a worker that dies is started again.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import threading
import time
from collections.abc import Callable
from multiprocessing.synchronize import Event as MpEvent
from typing import Any

from headend.balance import Balance, Seat

log = logging.getLogger("smgw.headend")

#: ``serve(stop, ready, seat)``: build everything, set ``ready`` once listening, serve until
#: ``stop``; ``seat``: this worker's place among several (None: the only one)
Serve = Callable[[threading.Event, Callable[[], None], Seat | None], None]


def _child(serve: Serve, ready: MpEvent, balance: Balance, index: int) -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the parent, which stops us in order
    serve(stop, ready.set, balance.seat(index))


def run_in_process(serve: Serve, stop: threading.Event, seconds: float | None,
                   on_ready: Callable[[], None]) -> None:
    """One ingest in this process (``workers = 1``), until ``stop`` or ``seconds``."""
    deadline = None if seconds is None else time.monotonic() + seconds
    watcher_stop = threading.Event()

    def watch() -> None:
        while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
            stop.wait(0.2)
        watcher_stop.set()

    threading.Thread(target=watch, daemon=True).start()
    serve(watcher_stop, on_ready, None)


def run_workers(count: int, serve: Serve, stop: threading.Event, *, seconds: float | None = None,
                ready_timeout: float = 20.0, on_ready: Callable[[], None] = lambda: None) -> None:
    """Run ``count`` workers until ``stop`` (or ``seconds``); ``on_ready`` once all listen."""
    deadline = None if seconds is None else time.monotonic() + seconds
    ctx = multiprocessing.get_context("fork")  # the parent holds no thread or connection yet
    workers: list[tuple[Any, MpEvent]] = []
    balance = Balance(count)

    def start(index: int) -> tuple[Any, MpEvent]:
        ready = ctx.Event()
        proc = ctx.Process(target=_child, args=(serve, ready, balance, index), daemon=True)
        proc.start()
        return proc, ready

    workers = [start(i) for i in range(count)]
    started = time.monotonic()
    try:  # (whatever ends this, every worker started is ended with it)
        for proc, ready in workers:
            while not ready.wait(0.1):  # a worker that dies on the way (its bind failed) is reported now
                if not proc.is_alive():
                    raise RuntimeError(f"ingest worker {proc.pid} exited (code {proc.exitcode}) before listening")
                if time.monotonic() - started > ready_timeout:
                    raise RuntimeError(f"ingest worker {proc.pid} did not start listening")
                if stop.is_set():
                    return
        on_ready()
        while not stop.wait(0.5) and (deadline is None or time.monotonic() < deadline):
            for i, (proc, _) in enumerate(workers):
                if not proc.is_alive():
                    log.error("ingest worker %d exited (code %s); starting another", proc.pid, proc.exitcode)
                    workers[i] = start(i)
    finally:
        for proc, _ in workers:
            proc.terminate()
        for proc, _ in workers:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
        balance.close()
