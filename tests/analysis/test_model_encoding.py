"""Times in the model are round(seconds, 6), whatever text carries them; its endpoints read
back as they were written."""

from __future__ import annotations

import json
import random
import struct

from captures.analysis.model import rounded, seconds_text
from captures.analysis.records import endpoint, endpoint_host, split_endpoint


def test_message_times_parse_to_exactly_the_rounded_seconds():
    rng = random.Random(7)
    values = [0.0, 1.0, 0.5, 1.5e-05, 2.5e-07, 0.0000005, 0.0000015, 86400.123456789,
              -0.0000004, 1e-9, 123456.9999996]
    values += [rng.random() * 10 ** rng.randint(-8, 6) for _ in range(20_000)]
    values += [rng.randint(0, 10**7) / 10**7 for _ in range(20_000)]  # near the 6th digit
    for value in values:
        assert json.loads(seconds_text(value)) == round(value, 6), value


def test_message_times_read_as_the_formatted_float_would():
    """seconds_text rounds most times in integers (model.py): the digits must be those that
    formatting the float gives, ties and near-ties included."""
    rng = random.Random(11)
    values = [0.0, 0.5, 5e-07, 1.5e-06, 2.0000005, 0.1, 0.7, 7999999.9999995, 8e6, 1e7, -4e-7]
    values += [rng.random() * 10 ** rng.randint(-8, 7) for _ in range(50_000)]
    values += [(rng.randint(0, 10**9) + 0.5) / 10**6 for _ in range(50_000)]  # on a tie
    values += [(rng.randint(0, 10**9) + 0.495) / 10**6 for _ in range(50_000)]  # near one
    start = 1796051458.1821496  # epoch times as captures hold them, made relative
    values += [(start + rng.random() * 100) - start for _ in range(50_000)]
    for value in values:
        formatted = f"{value:.6f}".rstrip("0")
        assert seconds_text(value) == (formatted + "0" if formatted.endswith(".") else formatted)


def test_rounded_times_are_the_floats_round_gives():
    """model.rounded rounds in integers where it can (every time and duration the model holds
    goes through it): the same double as round(), ties, near-ties and signs included."""
    rng = random.Random(13)
    values = [0.0, -0.0, 1e-9, 5e-4, 1.5e-3, 2.5e-7, 123.4565, 1.0005, 8e9, 1e13, -1.5, -4e-4,
              7999999.9999995, 8e6, float("inf")]
    values += [rng.random() * 10 ** rng.randint(-8, 9) for _ in range(50_000)]
    for scale in (10**3, 10**6):
        values += [(rng.randint(0, 10**9) + 0.5) / scale for _ in range(20_000)]  # on a tie
        values += [(rng.randint(0, 10**9) + 0.495) / scale for _ in range(20_000)]  # near one
        values += [-(rng.randint(0, 10**9) + 0.5) / scale for _ in range(2_000)]
    for value in values:
        for digits in (3, 6):
            assert struct.pack("<d", rounded(value, digits)) == struct.pack(
                "<d", round(value, digits)), (value, digits)


def test_an_endpoints_host_is_what_splitting_it_gives():
    """engine reads each DNS exchange's client host with endpoint_host, the rest of the
    project with split_endpoint: they must agree on every endpoint text, odd ones too."""
    texts = [endpoint(ip, port, version) for ip, version in
             (("10.0.0.1", 4), ("fe80::1", 6), ("::", 6), ("2001:db8::a:1", 6))
             for port in (0, 53, 65535)]
    texts += ["10.0.0.1", "fe80::1", "[::1]", "[::1]:", "[]:", "[", ":53", "", "a:b:c",
              "[fe80::1%eth0]:443"]
    for text in texts:
        assert endpoint_host(text) == split_endpoint(text)[0], text
