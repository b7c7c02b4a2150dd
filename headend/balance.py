"""Connections spread evenly over the ingest workers.

The kernel hands each new connection to one worker's listener by a hash of its addresses
(``SO_REUSEPORT``). Over a fleet of thousands that is even; over a few dozen gateways it
is not: 32 connections split 20 to 12 as often as one time in six, and the worker with 20
then works alone once the other has caught up, a tenth of the throughput lost
(bench/headend.py). So a worker that accepts a connection while it has more than another
worker hands it over, before reading a byte of it, through a Unix datagram socket
(SCM_RIGHTS): the same kernel socket, now the other worker's. Only fresh connections move,
so no request is ever split between workers, and a connection moves at most once.

What each worker has is counted in shared memory made by the parent before it forks the
workers (as are the inboxes), without a lock: every number has one writer. A worker counts
the connections it holds; a sender counts what it sent to each worker, a receiver what it
took from each sender (the datagram names the sender), so what is on its way to a worker
counts as that worker's at once (a burst of connections is not all sent to the one that
looked emptiest before it could read its inbox), and stays counted across the worker's
restart until the new one takes it. A full inbox (a receiver that does not read: stuck,
or being restarted) refuses the send, and the accepting worker keeps the connection.
"""

from __future__ import annotations

import logging
import multiprocessing
import socket
from typing import Any

log = logging.getLogger("smgw.headend")


class Balance:
    """Made by the parent before it forks ``workers`` workers; each takes ``seat(index)``."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        # held[i], then sent[i][j] (by i to j), then took[j][i] (by j from i): 8-byte slots,
        # each written by one process only, so a read is never torn and nothing needs a lock
        # (a lock held by a worker the OOM killer took would stop every other worker)
        self._numbers: Any = multiprocessing.get_context("fork").RawArray("q", workers + 2 * workers * workers)
        self._inboxes = [socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM) for _ in range(workers)]
        for pair in self._inboxes:
            for end in pair:
                end.setblocking(False)

    def seat(self, index: int) -> Seat:
        """Worker ``index``'s place. It starts holding nothing; a worker started in the place
        of one that died takes over what was on its way to that one (it waits in the inbox,
        and stays counted to this place until taken)."""
        self._numbers[index] = 0
        return Seat(index, self.workers, self._numbers, self._inboxes[index][0], [pair[1] for pair in self._inboxes])

    def close(self) -> None:
        for pair in self._inboxes:
            for end in pair:
                end.close()


class Seat:
    """One worker's end: its inbox, its numbers, and everybody's to read."""

    def __init__(self, index: int, workers: int, numbers: Any, inbox: socket.socket,
                 outboxes: list[socket.socket]) -> None:
        self.index, self.inbox = index, inbox
        self._n, self._numbers, self._outboxes = workers, numbers, outboxes

    def _sent(self, sender: int, receiver: int) -> int:
        return self._n + sender * self._n + receiver

    def _took(self, receiver: int, sender: int) -> int:
        return self._n + self._n * self._n + receiver * self._n + sender

    def load(self, worker: int) -> int:
        """What ``worker`` holds and what is on its way to it."""
        numbers, n = self._numbers, self._n
        coming = sum(numbers[self._sent(i, worker)] - numbers[self._took(worker, i)] for i in range(n))
        return int(numbers[worker]) + int(coming)

    def count(self, change: int) -> None:
        """This worker took (+1) or let go of (-1) a connection."""
        self._numbers[self.index] += change

    def hand_over(self, sock: socket.socket) -> bool:
        """``sock`` (just accepted, nothing read) sent to the worker with the least, if it has
        less than this one (which then closes its own descriptor); False: keep it."""
        loads = self.loads()
        target = min(range(self._n), key=loads.__getitem__)
        if target == self.index or loads[target] >= loads[self.index]:
            return False
        slot = self._sent(self.index, target)
        self._numbers[slot] += 1  # counted before it is sent: the next connection sees it
        try:
            socket.send_fds(self._outboxes[target], [b"%d" % self.index], [sock.fileno()])
        except OSError as exc:  # its inbox is full (it does not read) or gone: keep the connection
            self._numbers[slot] -= 1
            log.debug("ingest: cannot hand a connection to worker %d (%s); kept", target, exc)
            return False
        return True

    def receive(self, most: int) -> list[socket.socket]:
        """Up to ``most`` connections other workers handed to this one."""
        received: list[socket.socket] = []
        while len(received) < most:
            try:
                message, fds, flags, _ = socket.recv_fds(self.inbox, 16, 1)
            except (BlockingIOError, InterruptedError):
                break
            sender = int(message) if message.isdigit() and int(message) < self._n else None
            if sender is None:  # (only our own workers hold the other ends)
                log.error("ingest: a message in the connection inbox not from a worker: %r", message[:16])
            else:
                self._numbers[self._took(self.index, sender)] += 1
            received.extend(socket.socket(fileno=fd) for fd in fds)
            if flags & socket.MSG_CTRUNC:  # no descriptor free for it: the connection is lost (its sender tries again)
                log.warning("ingest: a connection handed over by worker %s was lost (out of file descriptors)",
                            sender)
        return received

    def loads(self) -> list[int]:
        """What each worker has (for logs and tests)."""
        return [self.load(i) for i in range(self._n)]
