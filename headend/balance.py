"""Connections spread evenly over the ingest workers.

The kernel hands each new connection to one worker's listener by a hash of its addresses
(``SO_REUSEPORT``). Over a fleet of thousands that is even; over a few dozen gateways it
is not: 32 connections split 20 to 12 as often as one time in six, and the worker with 20
then works alone once the other has caught up, a tenth of the throughput lost
(bench/headend.py). So a worker that accepts a connection while it holds more than another
worker hands it over, before reading a byte of it, through a Unix datagram socket
(SCM_RIGHTS): the same kernel socket, now the other worker's. Only fresh connections move,
so no request is ever split between workers, and a connection moves at most once.

What each worker holds is kept in shared memory (made by the parent before it forks the
workers, as are the inboxes), changed under one lock: a worker counts its own connections
up and down, and a sender counts a handed-over connection to its receiver at once, so a
burst of connections is not all sent to the one that looked emptiest before it could read
its inbox. A full inbox (a receiver that does not read: stuck, or being restarted) refuses
the send, and the accepting worker keeps the connection.
"""

from __future__ import annotations

import logging
import multiprocessing
import socket
from multiprocessing.sharedctypes import SynchronizedArray
from typing import Any

log = logging.getLogger("smgw.headend")


class Balance:
    """Made by the parent before it forks ``workers`` workers; each takes ``seat(index)``."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._held: SynchronizedArray[Any] = multiprocessing.get_context("fork").Array("q", workers)
        self._inboxes = [socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM) for _ in range(workers)]
        for pair in self._inboxes:
            for end in pair:
                end.setblocking(False)

    def seat(self, index: int) -> Seat:
        """Worker ``index``'s place: it starts holding nothing (a worker started again in the
        place of one that died starts afresh; connections that were on their way to the dead
        one wait in the inbox for it)."""
        with self._held.get_lock():
            self._held[index] = 0
        return Seat(index, self._held, self._inboxes[index][0], [pair[1] for pair in self._inboxes])

    def close(self) -> None:
        for pair in self._inboxes:
            for end in pair:
                end.close()


class Seat:
    """One worker's end: its inbox, and what every worker holds."""

    def __init__(self, index: int, held: SynchronizedArray[Any], inbox: socket.socket,
                 outboxes: list[socket.socket]) -> None:
        self.index, self.inbox = index, inbox
        self._held, self._outboxes = held, outboxes

    def count(self, change: int, index: int | None = None) -> None:
        """This worker (or worker ``index``) took (+1) or let go of (-1) a connection."""
        with self._held.get_lock():
            self._held[self.index if index is None else index] += change

    def hand_over(self, sock: socket.socket) -> bool:
        """``sock`` (just accepted, nothing read) sent to the worker holding the fewest, if it
        holds fewer than this one (which then closes its own descriptor); False: keep it."""
        with self._held.get_lock():
            mine = self._held[self.index]
            target = min(range(len(self._outboxes)), key=lambda i: self._held[i])
            if target == self.index or self._held[target] >= mine:
                return False
            self._held[target] += 1  # counted now: the next connection sees it
        try:
            socket.send_fds(self._outboxes[target], [b"c"], [sock.fileno()])
        except OSError as exc:  # its inbox is full (it does not read) or gone: keep the connection
            log.debug("ingest: cannot hand a connection to worker %d (%s); kept", target, exc)
            self.count(-1, target)
            return False
        return True

    def receive(self) -> list[socket.socket]:
        """The connections other workers handed to this one (already counted to it)."""
        received: list[socket.socket] = []
        while True:
            try:
                _, fds, _, _ = socket.recv_fds(self.inbox, 16, 16)
            except (BlockingIOError, InterruptedError):
                return received
            received.extend(socket.socket(fileno=fd) for fd in fds)

    def held(self) -> list[int]:
        """What each worker holds (for logs and tests)."""
        with self._held.get_lock():
            return [int(self._held[i]) for i in range(len(self._outboxes))]
