"""A Service capture: every pod behind it at once, merged into one pcapng, analysed as one."""

from __future__ import annotations

import io
import json

from captures.analysis import CaptureFile, analyze_files
from captures.analysis.pcapfile import Warnings, read_frames
from captures.sources import kubernetes as ks


def test_a_service_capture_merges_its_pods_and_folds_copies_seen_at_both(cluster, apiserver,
                                                                        tmp_path):
    source = ks.ServiceSource("default", "nginx", "", cluster)
    source.open()
    assert sorted(s.pod for s in source.pods) == ["nginx-a", "nginx-b"]
    expected = sum(len(apiserver.recordings[p]) for p in ("nginx-a", "nginx-b"))
    got = b""
    while apiserver.sessions and sum(len(s.sent) for s in apiserver.sessions) < expected:
        got += source.stream.read(4096)  # wait until both pods streamed everything
    source.stop()
    while chunk := source.stream.read(65536):
        got += chunk
    source.close()
    path = tmp_path / "service.pcapng"
    path.write_bytes(got)

    with open(path, "rb") as fp:
        frames = list(read_frames(fp, 0, Warnings())[1])
    assert {f.interface for f in frames} == {"nginx-a:any", "nginx-b:any"}
    assert [f.time for f in frames] == sorted(f.time for f in frames)  # merged in time order
    assert len(frames) == 29 + 17  # every packet of both recordings

    model = analyze_files([CaptureFile(path, source.vantage, source.interfaces)],
                          source.inventory())
    hops = _hop_labels(model)
    # nginx-a → nginx-b directly: one message per packet, seen leaving one pod, entering the other
    assert any({"nginx-a:eth0", "nginx-b:eth0"} <= labels for labels in hops)
    model.close()


def _hop_labels(model) -> list[set]:
    out = io.StringIO()
    model.write_json(out)
    document = json.loads(out.getvalue())
    labels = []
    for message in document["messages"]:
        labels.append({hop.get("interface") or hop.get("at") or str(hop)
                       for hop in message.get("hops") or []})
    return labels
