"""Fuzzing the analysis with mutants of the real corpus: nothing crashes, hangs or blows up.

    .venv/bin/python bench/fuzz.py --n 30000 --seed 1 [--corpus DIR] [--keep DIR]

Each mutant is a corpus capture with one mutation: bits flipped, the file cut short, a length
field (pcap record, pcapng block, IPv4/UDP/TCP header, DNS counts) set to a boundary value, a
pcapng block's type or a link type changed. Each is analysed as a user's upload would be (the
engine, the JSON document, the text report) in a child process limited in time and address
space, and classified:

    ok           analysed (warnings and `partial` are fine: the file is damaged)
    clean_error  refused with CaptureError, the message a user sees
    crash        any other exception (the traceback is printed, once per signature)
    hang         no answer within --timeout seconds
    memory       MemoryError, or the child died under the --memory-mb limit

The last line printed is `ok=N clean_error=N crash=N hang=N memory=N`. tests/analysis/
test_fuzz.py runs a short seeded run of this in the suite.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import resource
import select
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUTCOMES = ("ok", "clean_error", "crash", "hang", "memory")
BOUNDARIES = (0, 1, 2, 3, 4, 7, 8, 12, 15, 16, 20, 0x7F, 0xFF, 0x100, 0x7FFF, 0xFFFF,
              0x10000, 0x7FFFFFFF, 0xFFFFFFFF)


# -- where the length fields are -----------------------------------------------------------------


def _records(data: bytes) -> list[tuple[int, int, int]]:
    """(offset of the length field, its width, offset of the frame data) for each record or
    packet block, and of each block's total length; empty for what cannot be walked."""
    fields = []
    if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\xc3\xd4",
                    b"\xa1\xb2\x3c\x4d"):
        endian = "<" if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
        offset = 24
        while offset + 16 <= len(data) and len(fields) < 100_000:
            caplen = struct.unpack_from(endian + "I", data, offset + 8)[0]
            fields.append((offset + 8, 4, offset + 16))
            offset += 16 + caplen
    elif data[:4] == b"\x0a\x0d\x0d\x0a":
        endian = "<" if data[8:12] == b"\x4d\x3c\x2b\x1a" else ">"
        offset = 0
        while offset + 12 <= len(data) and len(fields) < 100_000:
            btype, total = struct.unpack_from(endian + "II", data, offset)
            fields.append((offset + 4, 4, -1))
            if btype == 6:
                fields.append((offset + 20, 4, offset + 28))
            if total < 12:
                break
            offset += total
    return fields


def _ipv4_headers(data: bytes) -> list[int]:
    """Offsets of IPv4 headers behind Ethernet or cooked headers, found by their shape."""
    found = []
    for _field, _width, frame_at in _records(data):
        if frame_at < 0:
            continue
        for link_header in (14, 16, 20, 0):
            at = frame_at + link_header
            if at + 20 <= len(data) and data[at] == 0x45:
                found.append(at)
                break
    return found


# -- mutations -----------------------------------------------------------------------------------


def bit_flips(data: bytearray, rng: random.Random) -> str:
    for _ in range(rng.randint(1, 8)):
        at = rng.randrange(len(data))
        data[at] ^= 1 << rng.randrange(8)
    return "bit flips"


def truncation(data: bytearray, rng: random.Random) -> str:
    del data[rng.randrange(1, len(data)):]
    return "truncated"


def length_field(data: bytearray, rng: random.Random) -> str:
    fields = _records(bytes(data))
    if not fields:
        return bit_flips(data, rng)
    at, width, _frame = rng.choice(fields)
    value = rng.choice(BOUNDARIES) & ((1 << (8 * width)) - 1)
    endian = "<" if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") or (
        data[:4] == b"\x0a\x0d\x0d\x0a" and data[8:12] == b"\x4d\x3c\x2b\x1a") else ">"
    data[at:at + width] = value.to_bytes(width, "little" if endian == "<" else "big")
    return "record length"


def block_type(data: bytearray, rng: random.Random) -> str:
    if data[:4] != b"\x0a\x0d\x0d\x0a":
        return link_type(data, rng)
    blocks = [at - 4 for at, _w, frame in _records(bytes(data)) if frame < 0]
    at = rng.choice(blocks[1:] or blocks)
    endian = "little" if data[8:12] == b"\x4d\x3c\x2b\x1a" else "big"
    data[at:at + 4] = rng.choice((1, 2, 3, 4, 5, 6, 0x0A0D0D0A, 0x80000001,
                                  rng.getrandbits(32))).to_bytes(4, endian)
    return "block type"


def link_type(data: bytearray, rng: random.Random) -> str:
    chosen = rng.choice((0, 1, 101, 105, 113, 127, 228, 229, 276, 0xFFFF))
    if data[:4] == b"\x0a\x0d\x0d\x0a":
        endian = "little" if data[8:12] == b"\x4d\x3c\x2b\x1a" else "big"
        blocks = [at - 4 for at, _w, frame in _records(bytes(data)) if frame < 0]
        idbs = [at for at in blocks if at + 10 <= len(data)
                and int.from_bytes(data[at:at + 4], endian) == 1]
        if idbs:
            at = rng.choice(idbs) + 8
            data[at:at + 2] = chosen.to_bytes(2, endian)
            return "link type"
        return bit_flips(data, rng)
    if len(data) >= 24:
        endian = "little" if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else "big"
        data[20:24] = chosen.to_bytes(4, endian)
    return "link type"


def inner_length(data: bytearray, rng: random.Random) -> str:
    headers = _ipv4_headers(bytes(data))
    if not headers:
        return length_field(data, rng)
    ip = rng.choice(headers)
    ihl = (data[ip] & 0x0F) * 4
    proto = data[ip + 9]
    choice = rng.randrange(5)
    if choice == 0:  # IPv4 total length
        data[ip + 2:ip + 4] = (rng.choice(BOUNDARIES) & 0xFFFF).to_bytes(2, "big")
    elif choice == 1:  # IHL
        data[ip] = 0x40 | rng.randrange(16)
    elif proto == 6 and ip + ihl + 13 <= len(data):  # TCP data offset
        data[ip + ihl + 12] = rng.randrange(256)
    elif proto == 17 and ip + ihl + 16 <= len(data):
        if choice == 2:  # UDP length
            data[ip + ihl + 4:ip + ihl + 6] = (rng.choice(BOUNDARIES) & 0xFFFF).to_bytes(2, "big")
        else:  # DNS counts, and a name's first label length or pointer
            at = ip + ihl + 8 + rng.choice((4, 6, 8, 10, 12))
            data[at:at + 2] = (rng.choice(BOUNDARIES) & 0xFFFF).to_bytes(2, "big")
    else:
        data[ip + 2:ip + 4] = (rng.choice(BOUNDARIES) & 0xFFFF).to_bytes(2, "big")
    return "inner length"


MUTATIONS = (bit_flips, truncation, length_field, block_type, link_type, inner_length)


def mutants(files: list[Path], n: int, seed: int):
    """(name, bytes) for n mutants, the same for the same seed."""
    rng = random.Random(seed)
    originals = {path: path.read_bytes() for path in files}
    for index in range(n):
        path = rng.choice(files)
        data = bytearray(originals[path])
        how = rng.choice(MUTATIONS)(data, rng) if data else "empty"
        if data and data == originals[path]:  # the value chosen was the one already there
            at = rng.randrange(len(data))
            data[at] ^= 1 << rng.randrange(8)
        yield f"{index}:{path.name}:{how}", bytes(data)


# -- the child: analyses one file per line of stdin ----------------------------------------------


def child(memory_mb: int) -> None:
    sys.path.insert(0, str(ROOT))
    limit = memory_mb * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    from captures.analysis import CaptureError, CaptureFile, analyze_files
    from captures.analysis.narrative import narrate

    for line in sys.stdin:
        path = line.strip()
        try:
            model = analyze_files([CaptureFile(path)])
            try:
                with open(os.devnull, "w") as sink:
                    model.write_json(sink)
                narrate(model)  # the text report, as `kviz analyze --format text` writes it
            finally:
                model.close()
            answer = {"outcome": "ok"}
        except CaptureError as exc:
            answer = {"outcome": "clean_error", "message": str(exc)[:200]}
        except MemoryError:
            answer = {"outcome": "memory"}
        except Exception as exc:  # exactly what the fuzzer looks for
            import traceback

            answer = {"outcome": "crash", "error": f"{exc.__class__.__name__}: {exc}"[:300],
                      "where": traceback.format_exc()[-1500:]}
        print(json.dumps(answer), flush=True)


class Runner:
    """One child at a time; a child that hangs or dies is replaced for the next mutant."""

    def __init__(self, timeout: float, memory_mb: int):
        self.timeout, self.memory_mb = timeout, memory_mb
        self.process: subprocess.Popen | None = None

    def _start(self) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--child",
             "--memory-mb", str(self.memory_mb)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            text=True, bufsize=1, cwd=ROOT)

    def run(self, path: Path) -> dict:
        if self.process is None or self.process.poll() is not None:
            self.process = self._start()
        self.process.stdin.write(f"{path}\n")
        self.process.stdin.flush()
        ready = select.select([self.process.stdout], [], [], self.timeout)[0]
        line = self.process.stdout.readline() if ready else ""
        if line:
            return json.loads(line)
        timed_out = not ready
        self.close()
        if timed_out:
            return {"outcome": "hang"}
        return {"outcome": "memory", "error": "the child died (killed under its memory limit)"}

    def close(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None


def fuzz(files: list[Path], n: int, seed: int, timeout: float = 20.0, memory_mb: int = 2048,
         keep: Path | None = None, report=print) -> dict:
    """Counts per outcome; mutants that were not ok or clean_error are kept in `keep`."""
    counts = collections.Counter({outcome: 0 for outcome in OUTCOMES})
    signatures: dict[str, str] = {}
    runner = Runner(timeout, memory_mb)
    try:
        with tempfile.TemporaryDirectory(prefix="kviz-fuzz-") as scratch:
            target = Path(scratch) / "mutant"
            for name, data in mutants(files, n, seed):
                target.write_bytes(data)
                answer = runner.run(target)
                counts[answer["outcome"]] += 1
                if answer["outcome"] not in ("ok", "clean_error"):
                    signature = answer.get("error", answer["outcome"])
                    if signature not in signatures:
                        signatures[signature] = name
                        report(f"{answer['outcome']}: {name}: {signature}\n"
                               f"{answer.get('where', '')}")
                    if keep is not None:
                        keep.mkdir(parents=True, exist_ok=True)
                        (keep / name.replace(":", "_").replace(" ", "-")).write_bytes(data)
    finally:
        runner.close()
    return dict(counts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--corpus", type=Path, default=ROOT.parent / "shared" / "corpus")
    parser.add_argument("--timeout", type=float, default=20.0)
    parser.add_argument("--memory-mb", type=int, default=2048)
    parser.add_argument("--keep", type=Path, help="write the failing mutants here")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.memory_mb)
        return
    files = sorted(p for p in args.corpus.rglob("*") if p.suffix in (".pcap", ".pcapng", ".cap"))
    if not files:
        sys.exit(f"no captures under {args.corpus}")
    started = time.monotonic()
    counts = fuzz(files, args.n, args.seed, args.timeout, args.memory_mb, args.keep)
    print(f"# {args.n} mutants of {len(files)} files in {time.monotonic() - started:.0f} s")
    print(" ".join(f"{outcome}={counts[outcome]}" for outcome in OUTCOMES))


if __name__ == "__main__":
    main()
