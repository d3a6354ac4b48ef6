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
