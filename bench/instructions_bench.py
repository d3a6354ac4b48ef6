"""Instructions a packet, kviz against tshark: a steady companion to analyze_bench.py.

    .venv/bin/python bench/instructions_bench.py       # bench/.cache/mixed-1000000.pcapng
    .venv/bin/python bench/instructions_bench.py --capture FILE --start 1 --packets 10000

analyze_bench.py's wall-clock ratio moves by 15% from run to run on a shared two-core machine
(tshark took 48 to 62 s on the same file in one session), more than most changes to the
analysis. valgrind's callgrind counts instructions instead: the same for the same binary and
input whatever else the machine does. This runs `kviz analyze --format json` (the compiled
build unless --build says otherwise, reading ahead in a second process as a large capture is
read) and analyze_bench.py's `tshark -T fields` under callgrind, each on two slices of the
capture that start at the same packet, N and 3N packets long, and prints what the last 2N
packets cost: start-up, imports and the first fill of every cache cancel out. kviz's two
processes are counted apart, as they run at once on two cores; the one that costs more sets
the pace, so the ratio is tshark's instructions a packet over that one's. Instructions are not
seconds (tshark's C runs more of them per cycle than an interpreter's), so the ratio is not the
wall-clock one: it tells whether a change made the analysis cheaper, on which side, and by
how much. Last line:

    kviz_reader=R kviz_analyser=A tshark=T ratio_vs_tshark_instructions=X

(instructions a packet). A benchmark, not a test: nothing here asserts. Takes a few minutes
(under callgrind everything runs about fifty times slower).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from analyze_bench import CACHE, PYTHON, ROOT, tshark_command

TOTALS = re.compile(rb"^(?:summary|totals): (\d+)", re.MULTILINE)


def _slice(capture: Path, start: int, count: int, out: Path) -> None:
    subprocess.run(["editcap", "-r", str(capture), str(out), f"{start}-{start + count - 1}"],
                   check=True, capture_output=True, timeout=600)


def _callgrind(cmd: list[str], outdir: Path, env: dict | None = None) -> list[int]:
    """Each process' total instructions, in the order the processes started."""
    for old in outdir.glob("cg.*"):
        old.unlink()
    subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={outdir}/cg.%p",
                    *cmd], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                   cwd=ROOT, env=env, timeout=7200)
    files = sorted(outdir.glob("cg.*"), key=lambda p: int(p.suffix.lstrip(".")))
    totals = []
    for path in files:
        found = TOTALS.search(path.read_bytes())
        if found is None:
            raise RuntimeError(f"no instruction total in {path}")
        totals.append(int(found.group(1)))
    return totals


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--capture", type=Path, default=CACHE / "mixed-1000000.pcapng")
    parser.add_argument("--start", type=int, default=400_001,
                        help="first packet of both slices (1-based; default: the middle "
                             "of the 1M capture, past its first copy)")
    parser.add_argument("--packets", type=int, default=20_000, help="N: slices of N and 3N")
    parser.add_argument("--build", default="compiled", choices=("compiled", "interpreted"))
    options = parser.parse_args(argv)
    if not options.capture.exists():
        print(f"{options.capture} is missing: `analyze_bench.py --packets 1000000` makes it",
              file=sys.stderr)
        return 2
    info_path = options.capture.with_name(options.capture.stem + ".info.json")
    ports = json.loads(info_path.read_text()).get("ports", {}) if info_path.exists() else {}
    ports = {"dns": 53, "http": 80, "tls": 443, **ports}
    env = {**os.environ, "KVIZ_ANALYSIS_BUILD": options.build, "KVIZ_ANALYSIS_READAHEAD": "always"}
    n = options.packets
    with tempfile.TemporaryDirectory(prefix="kviz-instructions-") as tmp:
        work = Path(tmp)
        costs: dict[str, list[list[int]]] = {"kviz": [], "tshark": []}
        for count in (n, 3 * n):
            part = work / f"slice{count}.pcapng"
            _slice(options.capture, options.start, count, part)
            kviz = _callgrind([PYTHON, "manage.py", "kviz", "analyze", str(part), "--format",
                               "json"], work, env)
            if len(kviz) != 2:
                raise RuntimeError(f"expected kviz's two processes, counted {len(kviz)}")
            costs["kviz"].append(kviz)
            costs["tshark"].append(_callgrind(tshark_command(part, ports), work)[:1])
            print(f"{count} packets: kviz analysing {kviz[0]:,}, reading {kviz[1]:,}; "
                  f"tshark {costs['tshark'][-1][0]:,} instructions", flush=True)
    per = 2 * n
    analyser = (costs["kviz"][1][0] - costs["kviz"][0][0]) / per
    reader = (costs["kviz"][1][1] - costs["kviz"][0][1]) / per
    tshark = (costs["tshark"][1][0] - costs["tshark"][0][0]) / per
    print(f"the last {per} packets of packets {options.start}-{options.start + 3 * n - 1} of "
          f"{options.capture.name}, {options.build} build, instructions a packet:")
    print(f"kviz_reader={reader:.0f} kviz_analyser={analyser:.0f} tshark={tshark:.0f} "
          f"ratio_vs_tshark_instructions={tshark / max(reader, analyser):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
