"""Damaged or foreign input gives a clear answer quickly, never a crash.

Every case must end, within seconds, in one of two ways:

* `CaptureError` (exported by captures.analysis) whose one-line message names the problem, or
* a model with `capture.partial == True` and a `warnings` entry naming the problem, keeping
  whatever could be read before the damage.

Two cases accept a third, better outcome, because nothing is actually lost: a capture with a
global header and no packets may give an empty model with a warning (nothing was skipped, so
`partial` may stay false), and an absurd snaplen in the header, which a reader can ignore
because every record carries its own length, may give the complete model.

The damaged files are made from a real corpus capture, changing only headers or cutting the
file, never packet bytes.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import corpus_dir

REPO = Path(__file__).resolve().parents[2]
PCAP_SOURCE = "dns-http/skydive_dns-a-aaaa-then-http11-get-syn-fin.pcap"
PCAPNG_SOURCE = "linktype/zeek_pcapng-two-interfaces-dns.pcapng"

TRUNCATION_WORDS = ("truncat", "cut", "short", "incomplete", "end of file", "eof", "ends")
NOT_A_CAPTURE_WORDS = ("pcap", "capture", "format", "magic", "not a")
EMPTY_WORDS = ("empty", "no data", "0 bytes", *NOT_A_CAPTURE_WORDS, *TRUNCATION_WORDS)
NO_PACKETS_WORDS = ("no packet", "no frame", "0 packets", "0 frames", "empty")
LINKTYPE_WORDS = ("65000", "link")
SNAPLEN_WORDS = ("snap",)
HUGE_RECORD_WORDS = ("record", "length", "claims", "bytes", *TRUNCATION_WORDS)


# -- making bad files ------------------------------------------------------------------------


def _source(name: str) -> Path:
    root = corpus_dir()
    path = root / name if root else None
    if path is None or not path.is_file():
        pytest.skip(f"{name} is not in the corpus")
    return path


def _pcap_records(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of each record of a classic pcap, headers included."""
    endian = "<" if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    offset, out = 24, []
    while offset + 16 <= len(data):
        caplen = struct.unpack_from(endian + "I", data, offset + 8)[0]
        out.append((offset, offset + 16 + caplen))
        offset += 16 + caplen
    return out


def _pcapng_blocks(data: bytes) -> list[tuple[int, int, int]]:
    """(block type, start, end) of each block of a pcapng file."""
    endian = "<" if data[8:12] == b"\x4d\x3c\x2b\x1a" else ">"
    offset, out = 0, []
    while offset + 12 <= len(data):
        kind, length = struct.unpack_from(endian + "II", data, offset)
        if length < 12:
            break
        out.append((kind, offset, offset + length))
        offset += length
    return out


def _pcap_cuts(data: bytes) -> dict[str, tuple[int, int]]:
    """Cut offsets that fall inside a record, with how many records stay whole before each."""
    records = _pcap_records(data)
    middle = len(records) // 2
    return {
        "in-global-header": (10, 0),
        "in-first-record-header": (records[0][0] + 7, 0),
        "in-first-packet": ((records[0][0] + 16 + records[0][1]) // 2, 0),
        "in-middle-packet": (records[middle][0] + 16 + 5, middle),
        "one-byte-short": (len(data) - 1, len(records) - 1),
    }


def _pcapng_cuts(data: bytes) -> dict[str, tuple[int, int]]:
    packets = [(start, end) for kind, start, end in _pcapng_blocks(data) if kind in (3, 6)]
    last = packets[-1]
    return {
        "pcapng-in-section-header": (9, 0),
        "pcapng-in-last-packet-block": ((last[0] + last[1]) // 2, len(packets) - 1),
        "pcapng-one-byte-short": (len(data) - 1, len(packets) - 1),
    }


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _with_header_field(data: bytes, offset: int, value: int) -> bytes:
    endian = "<" if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    return data[:offset] + struct.pack(endian + "I", value) + data[offset + 4 :]


PNG_HEADER = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10\x00\x00\x00\x10\x08\x06"


# -- running the engine ----------------------------------------------------------------------


def analyse(path: Path):
    """("error", message) for a CaptureError, ("model", document) otherwise; any other
    exception fails the test with its type, which is the point of these tests."""
    from captures.analysis import CaptureError, CaptureFile, analyze_files

    try:
        document = analyze_files([CaptureFile(str(path))], inventory=None).to_dict()
    except CaptureError as exc:
        return "error", str(exc)
    except Exception as exc:  # any other type is the failure these tests look for
        pytest.fail(f"{path.name}: raised {type(exc).__name__}: {exc}, not CaptureError")
    return "model", document


def _names(text: str, words: tuple[str, ...]) -> bool:
    text = text.lower()
    return any(word in text for word in words)


def assert_clear_error_or_partial(path: Path, words: tuple[str, ...], whole_records=None):
    outcome, value = analyse(path)
    if outcome == "error":
        assert value.strip(), "CaptureError with an empty message"
        assert "\n" not in value.strip(), f"CaptureError message is not one line: {value!r}"
        assert _names(value, words), f"CaptureError {value!r} does not name the problem {words}"
        return outcome, value
    capture = value["capture"]
    assert capture["partial"] is True, f"damaged input gave a model not marked partial: {capture}"
    assert capture["warnings"], "partial model without warnings"
    assert any(_names(w, words) for w in capture["warnings"]), (
        f"no warning names the problem {words}: {capture['warnings']}"
    )
    if whole_records is not None:
        # What came before the damage is kept (the record cut in half may or may not count).
        packets = capture["files"][0]["packets"]
        assert whole_records <= packets <= whole_records + 1, (
            f"{whole_records} records were whole before the cut; the model read {packets}"
        )
    return outcome, value


# -- the cases -------------------------------------------------------------------------------


@pytest.mark.timeout(20)
@pytest.mark.parametrize(
    "cut", ["in-global-header", "in-first-record-header", "in-first-packet",
            "in-middle-packet", "one-byte-short"]
)
def test_it_reports_a_truncated_pcap(tmp_path, cut):
    data = _source(PCAP_SOURCE).read_bytes()
    offset, whole = _pcap_cuts(data)[cut]
    path = _write(tmp_path, f"cut-{cut}.pcap", data[:offset])
    words = TRUNCATION_WORDS + (NOT_A_CAPTURE_WORDS if offset < 24 else ())
    assert_clear_error_or_partial(path, words, whole_records=whole if offset >= 24 else None)


@pytest.mark.timeout(20)
@pytest.mark.parametrize(
    "cut", ["pcapng-in-section-header", "pcapng-in-last-packet-block", "pcapng-one-byte-short"]
)
def test_it_reports_a_truncated_pcapng(tmp_path, cut):
    data = _source(PCAPNG_SOURCE).read_bytes()
    offset, whole = _pcapng_cuts(data)[cut]
    path = _write(tmp_path, f"cut-{cut}.pcapng", data[:offset])
    words = TRUNCATION_WORDS + (NOT_A_CAPTURE_WORDS if offset < 28 else ())
    assert_clear_error_or_partial(path, words, whole_records=whole if offset >= 28 else None)


@pytest.mark.timeout(20)
@pytest.mark.parametrize(
    "name,content",
    [
        ("notes.txt", b"GET / HTTP/1.1\r\nHost: example\r\n\r\nthis is not a capture\n" * 20),
        ("image.pcap", PNG_HEADER + bytes(200)),
        ("zeros.pcap", bytes(4096)),
    ],
    ids=["text-file", "png-header", "zeros"],
)
def test_it_refuses_a_file_that_is_not_a_capture(tmp_path, name, content):
    assert_clear_error_or_partial(_write(tmp_path, name, content), NOT_A_CAPTURE_WORDS)


@pytest.mark.timeout(20)
def test_it_refuses_an_empty_file(tmp_path):
    assert_clear_error_or_partial(_write(tmp_path, "empty.pcap", b""), EMPTY_WORDS)


@pytest.mark.timeout(20)
def test_it_says_so_when_a_capture_has_no_packets(tmp_path):
    data = _source(PCAP_SOURCE).read_bytes()[:24]
    outcome, value = analyse(_write(tmp_path, "header-only.pcap", data))
    if outcome == "error":
        assert value.strip() and "\n" not in value.strip(), value
        assert _names(value, NO_PACKETS_WORDS), value
        return
    capture = value["capture"]
    assert capture["packets"] == 0
    assert value["messages"] == []
    assert capture["warnings"], "a capture with no packets should say so in warnings"
    assert any(_names(w, NO_PACKETS_WORDS) for w in capture["warnings"]), capture["warnings"]


@pytest.mark.timeout(20)
def test_it_reports_an_unknown_link_type(tmp_path):
    """Only the global header's link-type field changes (to 65000, unassigned)."""
    data = _with_header_field(_source(PCAP_SOURCE).read_bytes(), 20, 65000)
    outcome, value = assert_clear_error_or_partial(
        _write(tmp_path, "linktype-65000.pcap", data), LINKTYPE_WORDS
    )
    if outcome == "model":
        assert not value["connections"] and not value["dns"], (
            "frames of an unknown link type were decoded as something"
        )


@pytest.mark.timeout(20)
def test_it_survives_an_absurd_snaplen(tmp_path):
    """snaplen 0xFFFFFFFF must not make the reader allocate or wait for 4 GiB."""
    original = _source(PCAP_SOURCE)
    data = _with_header_field(original.read_bytes(), 16, 0xFFFFFFFF)
    path = _write(tmp_path, "snaplen-ffffffff.pcap", data)
    outcome, value = analyse(path)
    if outcome == "model" and not value["capture"]["partial"]:
        # Read by the records' own lengths: the complete model.
        records = len(_pcap_records(original.read_bytes()))
        assert value["capture"]["files"][0]["packets"] == records
        return
    assert_clear_error_or_partial(path, SNAPLEN_WORDS)


@pytest.mark.timeout(20)
def test_it_stops_at_a_record_claiming_four_gigabytes(tmp_path):
    """The record header of the middle packet claims 0xFFFFFFF0 bytes; the packets before it
    are kept and nothing tries to read or allocate that much."""
    data = _source(PCAP_SOURCE).read_bytes()
    records = _pcap_records(data)
    middle = len(records) // 2
    start = records[middle][0]
    data = _with_header_field(data, start + 8, 0xFFFFFFF0)
    assert_clear_error_or_partial(
        _write(tmp_path, "huge-record.pcap", data), HUGE_RECORD_WORDS, whole_records=middle
    )


# -- the same through the CLI ----------------------------------------------------------------


def _cli_cases(tmp_path: Path) -> dict[str, tuple[Path, bool]]:
    """name -> (file, whether exit 0 with a partial model is acceptable)."""
    pcap = _source(PCAP_SOURCE).read_bytes()
    offset, _ = _pcap_cuts(pcap)["in-middle-packet"]
    return {
        "text-file": (_write(tmp_path, "notes.txt", b"hello, not a capture\n" * 10), False),
        "png-header": (_write(tmp_path, "image.pcap", PNG_HEADER + bytes(64)), False),
        "empty": (_write(tmp_path, "empty.pcap", b""), False),
        "cut-in-global-header": (_write(tmp_path, "short.pcap", pcap[:10]), False),
        "cut-in-middle-packet": (_write(tmp_path, "cut.pcap", pcap[:offset]), True),
        # Analysing an unknown link type is the same partial outcome as a cut file.
        "unknown-link-type": (
            _write(tmp_path, "lt.pcap", _with_header_field(pcap, 20, 65000)), True
        ),
    }


CLI_CASES = ["text-file", "png-header", "empty", "cut-in-global-header", "cut-in-middle-packet",
             "unknown-link-type"]
# Django's BaseCommand turns a non-zero return into "CommandError: kviz analyze failed"; that
# wrapper line is not the message, so it is not counted against "one line".
DJANGO_WRAPPER = "CommandError: kviz analyze failed"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", CLI_CASES)
def test_it_fails_cleanly_from_the_command_line(tmp_path, case):
    path, partial_ok = _cli_cases(tmp_path)[case]
    proc = subprocess.run(
        [sys.executable, str(REPO / "manage.py"), "kviz", "analyze", str(path),
         "--format", "json"],
        cwd=REPO, capture_output=True, text=True, timeout=50,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    if proc.returncode == 0:
        assert partial_ok, f"exit 0 for a file that is not a readable capture: {proc.stdout[:300]}"
        document = json.loads(proc.stdout)
        assert document["capture"]["partial"] is True, document["capture"]
        assert document["capture"]["warnings"], document["capture"]
        return
    lines = [
        line for line in proc.stderr.splitlines()
        if line.strip() and line.strip() != DJANGO_WRAPPER
    ]
    assert len(lines) == 1, f"expected a one-line message on stderr, got {proc.stderr!r}"


@pytest.mark.timeout(60)
def test_a_pcapng_of_several_sections_is_read_whole_with_each_sections_interfaces(tmp_path):
    """Concatenated pcapng files are one valid file of several sections, each with its own
    interfaces (what `cat a.pcapng b.pcapng` or a restarted writer leaves): every frame is
    read, numbered as tshark numbers it, and named by its own section's interface."""
    from captures.analysis import CaptureFile, analyze_files

    corpus = corpus_dir()
    if corpus is None:
        pytest.skip("no capture corpus found")
    first = corpus / "linktype" / "zeek_pcapng-two-interfaces-dns.pcapng"
    second = corpus / "linktype" / "zeek_pcapng-126-idbs-packets-on-idb48-ldap-vlan-ipv6.pcapng"
    joined = _write(tmp_path, "joined.pcapng", first.read_bytes() + second.read_bytes())
    fields = subprocess.run(
        ["tshark", "-r", str(joined), "-n", "-T", "fields", "-e", "frame.number",
         "-e", "frame.interface_name"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout.splitlines()
    # tshark prints "-" for an interface its section left unnamed; the model says null.
    expected = {
        int(n): None if name == "-" else name
        for n, _, name in (line.partition("\t") for line in fields)
    }

    document = analyze_files([CaptureFile(str(joined))], inventory=None).to_dict()
    assert document["capture"]["packets"] == len(expected)
    assert not document["capture"]["partial"], document["capture"]["warnings"]
    seen = {m["frame"][1]: m["hops"][0]["interface"] for m in document["messages"]}
    assert seen and all(expected[number] == name for number, name in seen.items())
    # Frames of both sections made messages, on interfaces of both.
    boundary = int(subprocess.run(
        ["capinfos", "-c", "-M", "-r", "-T", str(first)], capture_output=True, text=True,
        timeout=60, check=True).stdout.split()[-1])
    assert min(seen) <= boundary < max(seen)
    assert len(set(seen.values())) >= 3  # two named in the first section, unnamed in the second
