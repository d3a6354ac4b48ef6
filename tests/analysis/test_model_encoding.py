"""Times in the model are round(seconds, 6), whatever text carries them."""

from __future__ import annotations

import json
import random

from captures.analysis.model import seconds_text


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
