// The live view: while a capture runs, its batches (captures/live.py, over the capture's
// WebSocket) become provisional arrows between per-IP lanes, appended at a fixed pitch. This is
// the one place the browser places arrows itself, and only until the analysis exists: then the
// real layout (names, phases, folds, badges) replaces it.

const AXIS = 96, HEAD = 64, PITCH = 28, LANE_GAP = 200, MAX_ROWS = 50000;

function ipOf(endpoint) {
  if (endpoint.startsWith("[")) return endpoint.slice(1, endpoint.indexOf("]"));
  const parts = endpoint.split(":");
  return parts.length === 2 ? parts[0] : endpoint; // "ip:port", or bare IPv4/IPv6
}

export class LiveSource {
  constructor() {
    this.head = {
      lanes: [], gaps: [], phases: [], folds: [], collapsed_phases: [], expanded: [],
      ys: [], row_count: 0, chunk_rows: MAX_ROWS, message_rows: null, provisional: true,
      size: { width: AXIS + 400, height: HEAD + 60, axis_width: AXIS, lane_head_height: HEAD },
    };
    this.rows = [];
    this.drawnY = [];
    this.drawnIndex = [];
    this.laneOf = new Map();
    this.start = null;
    this.thinned = 0;
    this.dropped = 0;
    this.notIp = 0; // frames without an IP packet (ARP, ...): no lanes; the analysis skips them too
    this.onChunk = () => {};
  }

  lane(ip) {
    let index = this.laneOf.get(ip);
    if (index === undefined) {
      index = this.head.lanes.length;
      this.laneOf.set(ip, index);
      this.head.lanes.push({ index, ip, name: ip, caption: "", facts: "provisional",
        head_width: Math.max(120, ip.length * 7.4 + 24), x: AXIS + 100 + index * LANE_GAP });
      this.head.size.width = AXIS + 100 + (index + 1) * LANE_GAP + 120;
    }
    return index;
  }

  // Returns true when lanes were added (the header must be drawn again).
  add(batch) {
    const lanesBefore = this.head.lanes.length;
    this.thinned += batch.thinned || 0;
    for (const packet of batch.rows || []) {
      if (!packet.src || !packet.dst) { this.notIp += 1; continue; }
      if (this.rows.length >= MAX_ROWS) { this.dropped += 1; continue; }
      if (this.start === null) this.start = packet.t;
      const index = this.rows.length;
      const y = HEAD + 30 + index * PITCH;
      this.rows.push({
        index, message: `p${packet.f || 0}:${packet.n}`, t: packet.t - this.start, src: packet.src, dst: packet.dst,
        from: this.lane(ipOf(packet.src)), to: this.lane(ipOf(packet.dst)), nat_to: null,
        label: packet.info || packet.proto, proto: packet.proto, flags: null, len: packet.len,
        connection: null, phase: "other", group: null, fold: null, frame: [packet.f || 0, packet.n],
        hops: [], hop_detail: [], badges: [], style: "provisional", y,
      });
      this.head.ys.push(y);
      this.drawnY.push(y);
      this.drawnIndex.push(index);
    }
    this.head.row_count = this.rows.length;
    this.head.size.height = HEAD + 60 + this.rows.length * PITCH;
    return this.head.lanes.length !== lanesBefore;
  }

  get rowCount() { return this.rows.length; }
  row(index) { return this.rows[index] || null; }
  async rowAsync(index) { return this.row(index); }
  rowOfMessage() { return -1; }
  drawnPosition(index) { return index < this.rows.length ? index : -1; }

  firstDrawnAt(top) {
    let low = 0, high = this.drawnY.length;
    while (low < high) {
      const middle = (low + high) >> 1;
      if (this.drawnY[middle] < top) low = middle + 1; else high = middle;
    }
    return low;
  }
}

// The capture's WebSocket, resumed after the last seq seen so a reconnect loses nothing.
export function follow(path, handlers) {
  let lastSeq = 0, closed = false, socket = null;
  function open() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    socket = new WebSocket(`${scheme}//${location.host}${path}`);
    socket.addEventListener("message", (message) => {
      const event = JSON.parse(message.data);
      if (event.kind === "hello") {
        socket.send(JSON.stringify({ resume_after: lastSeq }));
        handlers.onHello(event);
        return;
      }
      if (typeof event.seq === "number") {
        if (event.seq <= lastSeq) return;
        lastSeq = event.seq;
      }
      if (event.kind === "batch") handlers.onBatch(event);
      if (event.kind === "status") handlers.onStatus(event);
    });
    socket.addEventListener("close", (closing) => {
      // A revoked or expired share link (4410) or a refusal (4403) does not come back;
      // too many viewers (4429) may, later.
      if (closed || closing.code === 4410 || closing.code === 4403) return;
      setTimeout(open, closing.code === 4429 ? 30000 : 1000);
    });
  }
  open();
  return { close() { closed = true; if (socket) socket.close(); } };
}
