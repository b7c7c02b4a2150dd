"""Exceptions of the reader package.

Two kinds, as in h11: ``ProtocolError`` when the meter (the peer) sent something we must
reject, ``LocalProtocolError`` when our own side asked for something impossible. Everything
the reader raises on purpose derives from ``ReaderError``; the CLI maps ``exit_code``.
"""

from __future__ import annotations


class ReaderError(Exception):
    """Root of everything the reader raises deliberately."""

    exit_code = 1


class LocalProtocolError(ReaderError):
    """Our side misused the protocol machine (a bug or a bad option)."""


class ProtocolError(ReaderError):
    """The meter sent something that is not valid IEC 62056-21."""


class BlockCheckError(ProtocolError):
    """A block's BCC (or a mode D telegram's CRC) did not match, after every attempt."""

    exit_code = 4


class UnsupportedModeError(ReaderError):
    """A protocol mode smgw does not speak (mode E, HDLC) was asked for or offered."""


class MeterSilentError(ReaderError, TimeoutError):
    """The meter did not answer (or stopped answering) within the allowed time."""

    exit_code = 3


class PortError(ReaderError):
    """The serial port is missing, busy or unusable."""

    exit_code = 5
