"""Export words a reader takes literally: PlantUML participants on separate lines (a real `\\n`
in PlantUML's sense, not an escaped backslash) and a reply's undone DNAT not called a DNAT."""

from __future__ import annotations

from captures.render import build_layout, render_mermaid, render_plantuml, render_svg

CLIENT, VIP, POD = "10.244.10.89", "10.96.0.10", "10.244.10.91"


def model() -> dict:
    """A client's SYN to a Service, DNATed to a pod, and the pod's SYN-ACK back through the
    same conntrack entry (so both reference the one DNAT annotation)."""
    def message(i, t, src, dst, label, flags):
        return {"id": i, "t": t, "src": src, "dst": dst, "proto": "tcp", "label": label,
                "flags": flags, "len": 0, "connection": 0, "phase": "handshake",
                "frame": [0, i], "annotations": [0],
                "hops": [{"interface": "veth1", "t": t, "src": src, "dst": dst},
                         {"interface": "cbr0", "t": t, "src": src, "dst": dst}]}
    return {
        "schema": "kviz.sequence/1",
        "capture": {"files": []},
        "participants": [
            {"ip": CLIENT, "name": "ubuntu", "kind": "pod", "namespace": "default"},
            {"ip": VIP, "name": "nginx", "kind": "service", "namespace": "default"},
            {"ip": POD, "name": "nginx-1", "kind": "pod", "namespace": "default"},
        ],
        "messages": [
            message(0, 0.001, f"{CLIENT}:40000", f"{VIP}:80", "SYN", "S"),
            message(1, 0.002, f"{VIP}:80", f"{CLIENT}:40000", "SYN-ACK", "SA"),
            message(2, 0.003, f"{CLIENT}:40000", f"{VIP}:80", "ACK", "A"),
        ],
        "connections": [{"id": 0, "client": f"{CLIENT}:40000", "server": f"{VIP}:80",
                         "proto": "tcp"}],
        "annotations": [{"kind": "dnat", "before": f"{VIP}:80", "after": f"{POD}:80",
                         "where": "veth1 → cbr0"}],
    }


def test_it_writes_plantuml_participants_on_separate_lines():
    text = render_plantuml(build_layout(model()))
    ubuntu = next(line for line in text.splitlines() if line.startswith('participant "ubuntu'))
    assert ubuntu.startswith(f'participant "ubuntu\\n{CLIENT}\\npod')
    assert "∖" not in ubuntu


def test_it_neutralises_a_backslash_from_a_packet_but_keeps_the_line_breaks():
    hostile = model()
    hostile["participants"][0]["name"] = 'a\\nb %getenv("HOME")'
    text = render_plantuml(build_layout(hostile))
    line = next(line for line in text.splitlines() if line.startswith('participant "a'))
    assert line.startswith('participant "a∖nb &#37;getenv(&#34;HOME&#34;)\\n')


def test_it_calls_a_replys_rewrite_un_dnat_in_mermaid_and_the_svg():
    layout = build_layout(model())
    styles = {row.label: row.style for row in layout.rows}
    assert styles["SYN-ACK"] == "reply"
    lines = render_mermaid(layout).splitlines()
    syn_ack = next(line for line in lines if "SYN-ACK" in line)
    ack = next(line for line in lines if line.rstrip().endswith(("ACK · DNAT", "ACK")) and
               "SYN" not in line)
    assert "un-DNAT" in syn_ack
    assert "un-DNAT" not in ack
    assert ">un-DNAT<" in render_svg(layout)
