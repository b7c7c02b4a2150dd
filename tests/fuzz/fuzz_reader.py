"""Coverage-guided fuzzing of everything that reads meter bytes (atheris).

The rule (STYLE §5): any input parses or raises the reader's own error, nothing else.
Run: ``make fuzz`` (FUZZ_RUNS inputs, default one million). Not part of ``make test``.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from reader.errors import ReaderError
    from reader.loadprofile import parse_load_profile, parse_logbook
    from reader.protocol import ReadoutClient, SessionOptions
    from reader.telegram import decode_text, parse_data_lines, parse_identification, parse_telegram

SEEDS = [
    b"/ISK5MT831-3031\r\n\x021.8.0(0004417.218*kWh)\r\n!\r\n\x03\x00",
    b"/ESY5Q3DA1024 V3.03\r\n\r\n1-0:1.8.0*255(00012345.6789012*kWh)\r\n!\r\n",
]


def one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    choice = fdp.ConsumeIntInRange(0, 4)
    raw = fdp.ConsumeBytes(fdp.remaining_bytes())
    try:
        if choice == 0:
            parse_telegram(raw)
        elif choice == 1:
            parse_data_lines(decode_text(raw))
        elif choice == 2:
            parse_load_profile(decode_text(raw))
            parse_logbook(decode_text(raw))
        elif choice == 3:
            parse_identification(raw)
        else:
            client = ReadoutClient(SessionOptions(attempts=2, restart_delay=0.0, load_profile=True,
                                                  logbook=True, partial_blocks=bool(len(raw) & 1)))
            client.initiate()
            for i in range(0, len(raw), 11):
                client.receive_data(raw[i:i + 11])
                if client.done:
                    break
    except ReaderError:
        pass


def main() -> None:
    """Seed a fresh corpus folder with real-looking telegrams unless one is given."""
    import tempfile
    from pathlib import Path

    argv = list(sys.argv)
    if not any(not a.startswith("-") for a in argv[1:]):
        folder = Path(tempfile.mkdtemp(prefix="smgw-fuzz-"))
        corpus = Path(__file__).resolve().parents[1] / "corpus"
        seeds = SEEDS + [p.read_bytes() for p in sorted(corpus.glob("*.tlg"))]
        for n, seed in enumerate(seeds):
            for choice in range(5):  # the first byte picks the target
                (folder / f"seed-{n}-{choice}").write_bytes(bytes((choice,)) + seed)
        argv.append(str(folder))
    atheris.Setup(argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
