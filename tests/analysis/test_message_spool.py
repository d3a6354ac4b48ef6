"""The message spool keeps order and text across its move to a temporary file."""

from __future__ import annotations

import io
import json

import pytest

from captures.analysis import model
from captures.analysis.model import MessageSpool


@pytest.mark.parametrize("block", [1, 5, 13, 1 << 20])
@pytest.mark.parametrize("count", [0, 1, 3, 4, 7, 9, 10])
def test_messages_come_back_in_order_joined_whether_in_memory_or_spilled(
    count, block, monkeypatch, tmp_path
):
    monkeypatch.setattr(model, "COPY_BLOCK", block)  # copy blocks that end anywhere
    spool = MessageSpool(in_memory=3)
    # Non-ASCII text: a copy block may end inside a character's bytes.
    texts = [
        json.dumps({"id": i, "label": f"line\nbreak {i} → café ✓"}, ensure_ascii=False)
        for i in range(count)
    ]
    for text in texts:
        spool.append(text)
    out = io.StringIO()
    spool.write_joined(out, ",")
    assert json.loads(f"[{out.getvalue()}]") == [json.loads(t) for t in texts]
    assert list(spool.encoded()) == texts
    # Writing again gives the same text: reading the spill file leaves it whole. To a text
    # file over bytes (standard output, a file), the spilled bytes are copied underneath.
    with open(tmp_path / "out.json", "w", encoding="utf-8") as again:
        again.write("[")
        spool.write_joined(again, ",")
        again.write("]")
    assert (tmp_path / "out.json").read_text(encoding="utf-8") == f"[{out.getvalue()}]"
    spool.close()


@pytest.mark.parametrize("every", [1, 3, 64])
def test_messages_are_fetched_by_id_from_memory_and_from_the_file(every, monkeypatch):
    monkeypatch.setattr(model, "INDEX_EVERY", every)  # offsets at any spacing
    spool = MessageSpool(in_memory=7)
    texts = [json.dumps({"id": i, "label": f"→ {i}"}, ensure_ascii=False) for i in range(100)]
    for text in texts:
        spool.append(text)
    wanted = [0, 1, 5, 6, 7, 63, 64, 65, 97, 99, 99, 250, -1]
    assert spool.fetch(wanted) == {i: json.loads(texts[i]) for i in wanted if 0 <= i < 100}
    assert spool.fetch([]) == {}
    # Fetching leaves the spool whole: appending and reading on work as before.
    spool.append(texts[0])
    assert list(spool.encoded()) == [*texts, texts[0]]
    spool.close()
