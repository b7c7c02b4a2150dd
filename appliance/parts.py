"""``smgw gateway run`` in the foreground: the core plus the other parts as child processes.

On a gateway systemd runs each part as its own hardened unit and restarts it; for the demo,
the tests and a board without systemd, the core does the same for ``tunnels run`` and
``gatewatcher run``: start each, restart one that exits with a growing delay (2 s doubling to
60 s, back to 2 s once it stayed up a minute), and stop them all, politely then firmly, when
the core stops. A watcher thread does the restarting so a crashed tunnel supervisor does not
wait for the next meter poll; what happened is handed to the core's thread as events,
because the audit log belongs to that thread.
"""

from __future__ import annotations

import logging
import queue
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO

from appliance.child import dying_with_parent, end_all
from appliance.config import GatewayConfig

log = logging.getLogger("smgw.parts")
FIRST_DELAY_S, MAX_DELAY_S, STABLE_S = 2.0, 60.0, 60.0


def part_commands(cfg: GatewayConfig, config_path: str, *, threads: bool = False) -> dict[str, list[str]]:
    """The parts besides the core that this config needs, as argv (same interpreter, same
    config); with ``threads`` only those that never run as a thread of the core: the portal."""
    smgw = [sys.executable, "-m", "appliance.cli"]
    parts = {}
    if cfg.parties and not threads:
        parts["tunnels"] = [*smgw, "tunnels", "run", "--config", config_path]
    if cfg.admin is not None and not threads:
        parts["gatewatcher"] = [*smgw, "gatewatcher", "run", "--config", config_path]
    if cfg.portal is not None and cfg.portal.enabled:
        from appliance.portal_settings import settings_path

        # its own small entry point: the portal never loads the gateway's config model
        parts["portal"] = [sys.executable, "-m", "portal", "--settings", str(settings_path(cfg))]
    return parts


Events = queue.SimpleQueue[tuple[str, dict[str, object]]]


def _drain(events: Events) -> list[tuple[str, dict[str, object]]]:
    """What the watcher put in since the last call (the core's thread writes it to the log)."""
    out = []
    while True:
        try:
            out.append(events.get_nowait())
        except queue.Empty:
            return out


def part_loops(cfg: GatewayConfig) -> dict[str, Callable[[threading.Event], None]]:
    """The tunnels and the GateWatcher as loops for threads of this process. Never the portal:
    it faces the HAN, so it stays a process of its own that holds no key and no token session
    (ARCHITECTURE §2), whichever shape the rest takes."""
    loops: dict[str, Callable[[threading.Event], None]] = {}
    if cfg.parties:
        from appliance.tunnel_service import run_tunnels

        loops["tunnels"] = lambda stop: run_tunnels(cfg, stop)
    if cfg.admin is not None:
        from appliance.gatewatcher_service import run_gatewatcher

        loops["gatewatcher"] = lambda stop: run_gatewatcher(cfg, stop)
    return loops


_UNPRINTABLE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def _forward(name: str, stream: IO[bytes] | None) -> None:
    """A part's output onto ours, each line marked with the part's name and with control
    characters shown escaped (no terminal sequences, no carriage return over an earlier line)."""
    if stream is None:
        return
    with stream:
        for raw in stream:
            text = raw.decode("utf-8", "replace").rstrip("\n")
            sys.stderr.write(f"[{name}] {_UNPRINTABLE.sub(lambda m: repr(m.group())[1:-1], text)}\n")
            sys.stderr.flush()


@dataclass(slots=True)
class Part:
    name: str
    argv: list[str]
    privileges: list[str] = field(default_factory=list)  #: setpriv options (the portal's user)
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0
    delay: float = FIRST_DELAY_S
    due: float = 0.0


@dataclass
class PartSupervisor:
    parts: dict[str, Part]
    events: queue.SimpleQueue[tuple[str, dict[str, object]]] = field(default_factory=queue.SimpleQueue)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    @classmethod
    def for_commands(cls, commands: dict[str, list[str]],
                     privileges: dict[str, list[str]] | None = None) -> PartSupervisor:
        options = privileges or {}
        return cls({name: Part(name, argv, options.get(name, [])) for name, argv in commands.items()})

    def start(self) -> None:
        for part in self.parts.values():
            self._spawn(part)
        self._thread = threading.Thread(target=self._watch, name="parts", daemon=True)
        self._thread.start()

    def _spawn(self, part: Part) -> None:
        argv = dying_with_parent(part.argv, part.privileges)
        if not part.privileges:
            part.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, cwd="/")  # not the start folder's modules
        else:
            # a part started as another user shares nothing of root's it could misuse: not the
            # folder (it starts in /), not the session (from root's terminal it could push
            # keystrokes into root's shell, TIOCSTI), not root's stdout and stderr (a log file
            # it could truncate or forge lines in): its output comes through a pipe, line by line
            part.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=subprocess.STDOUT, cwd="/", start_new_session=True)
            threading.Thread(target=_forward, args=(part.name, part.proc.stdout), name=f"{part.name}-output",
                             daemon=True).start()
        part.started_at = time.monotonic()
        log.info("part %s started (pid %d)", part.name, part.proc.pid)
        self.events.put(("part.started", {"part": part.name, "pid": part.proc.pid, "restarts": part.restarts}))

    def _watch(self) -> None:
        while not self._stop.wait(0.5):
            now = time.monotonic()
            for part in self.parts.values():
                if part.proc is not None and part.proc.poll() is not None:
                    code = part.proc.returncode
                    if now - part.started_at >= STABLE_S:
                        part.delay = FIRST_DELAY_S
                    part.due = now + part.delay
                    log.warning("part %s exited (code %s); restart in %.0f s", part.name, code, part.delay)
                    self.events.put(("part.exited", {"part": part.name, "code": code, "restart_in_s": part.delay}))
                    part.delay = min(MAX_DELAY_S, part.delay * 2)
                    part.proc = None
                elif part.proc is None and now >= part.due and not self._stop.is_set():
                    part.restarts += 1
                    self._spawn(part)

    def pid(self, name: str) -> int | None:
        proc = self.parts[name].proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def drain(self) -> list[tuple[str, dict[str, object]]]:
        return _drain(self.events)

    def stop(self, grace_s: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        end_all([p.proc for p in self.parts.values() if p.proc is not None], grace_s)


@dataclass
class ThreadParts:
    """The same parts as threads of the core process (``gateway run --in-process``): one
    interpreter instead of three, for boards where every megabyte counts. The price: the
    core then holds CAP_NET_ADMIN for openvpn's tun devices (the separate units do not).
    A part whose loop raises is logged and run again after the same growing delay."""

    loops: dict[str, Callable[[threading.Event], None]]
    #: the parts that stay processes in this shape too (the portal)
    children: PartSupervisor | None = None
    events: queue.SimpleQueue[tuple[str, dict[str, object]]] = field(default_factory=queue.SimpleQueue)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        if self.children is not None:
            self.children.start()
        for name, loop in self.loops.items():
            thread = threading.Thread(target=self._run, args=(name, loop), name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def _run(self, name: str, loop: Callable[[threading.Event], None]) -> None:
        delay, restarts = FIRST_DELAY_S, 0
        while not self._stop.is_set():
            started = time.monotonic()
            self.events.put(("part.started", {"part": name, "thread": True, "restarts": restarts}))
            try:
                loop(self._stop)
                if self._stop.is_set():
                    return
                why = "returned"
            except Exception as exc:
                log.exception("part %s failed", name)
                why = f"{type(exc).__name__}: {exc}"[:300]
            if time.monotonic() - started >= STABLE_S:
                delay = FIRST_DELAY_S
            self.events.put(("part.exited", {"part": name, "why": why, "restart_in_s": delay}))
            self._stop.wait(delay)
            delay, restarts = min(MAX_DELAY_S, delay * 2), restarts + 1

    def drain(self) -> list[tuple[str, dict[str, object]]]:
        return _drain(self.events) + (self.children.drain() if self.children is not None else [])

    def stop(self, grace_s: float = 15.0) -> None:
        self._stop.set()
        if self.children is not None:
            self.children.stop()
        for thread in self._threads:
            thread.join(timeout=grace_s)
