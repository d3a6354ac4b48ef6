"""TLS records decrypted with a key log (the NSS format SSLKEYLOGFILE writes, as Wireshark
reads it), so the HTTP/1.1 and HTTP/2 inside read as for plaintext.

Theory of operation: a key log line is `LABEL <client random, hex> <secret, hex>`; the client
random (from the ClientHello) finds a connection's secrets.

    version  secrets                                         keys (per direction)
    TLS 1.2  CLIENT_RANDOM: the master secret                PRF(master, "key expansion",
                                                             server random + client random)
    TLS 1.3  CLIENT_/SERVER_HANDSHAKE_TRAFFIC_SECRET,        HKDF-Expand-Label(secret,
             CLIENT_/SERVER_TRAFFIC_SECRET_0                 "key" / "iv")

TLS 1.2 encrypts a direction from its ChangeCipherSpec on (AES-GCM with an explicit nonce, or
ChaCha20-Poly1305); TLS 1.3 encrypts every record after the ServerHello, first with the
handshake secrets and, after that side's Finished, with the application secrets (a KeyUpdate
moves them on). Each direction counts its records for the nonce, so it must see all of them:
bytes lost by the capture stop that direction's decryption. Only AEAD cipher suites are read
(the ones TLS 1.3 and modern TLS 1.2 use); CBC suites stay encrypted, and say so.

This module only turns bytes into records and records into plaintext; what the plaintext says
is read by http1.py and http.py, as for a connection in the clear (tcp.py wires them).
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESCCM, AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from .tls import HS_CLIENT_HELLO, HS_SERVER_HELLO, parse_hello

CONTENT_CCS, CONTENT_ALERT, CONTENT_HANDSHAKE, CONTENT_APPDATA = 20, 21, 22, 23
HS_FINISHED, HS_KEY_UPDATE = 20, 24
MAX_RECORD = (1 << 14) + 2048  # the largest ciphertext a record may carry (RFC 5246 §6.2.3)
MAX_HANDSHAKE = 128 * 1024  # handshake bytes held to find the hellos / Finished messages
MAX_KEYLOG_BYTES = 64 * 1024 * 1024
TLS13 = 0x0304
# A ServerHello with this random is a HelloRetryRequest (RFC 8446 §4.1.3): not the real one.
HELLO_RETRY_RANDOM = hashlib.sha256(b"HelloRetryRequest").digest()

LABELS = frozenset(
    {
        "CLIENT_RANDOM",
        "CLIENT_HANDSHAKE_TRAFFIC_SECRET",
        "SERVER_HANDSHAKE_TRAFFIC_SECRET",
        "CLIENT_TRAFFIC_SECRET_0",
        "SERVER_TRAFFIC_SECRET_0",
        "CLIENT_EARLY_TRAFFIC_SECRET",
        "EXPORTER_SECRET",
        "EARLY_EXPORTER_SECRET",
    }
)

# TLS 1.2 AEAD suites: id → (cipher, key length, IV length from the key block, PRF hash)
SUITES_12 = {
    0x009C: ("aes-gcm", 16, 4, "sha256"),  # RSA_WITH_AES_128_GCM_SHA256
    0x009D: ("aes-gcm", 32, 4, "sha384"),
    0x009E: ("aes-gcm", 16, 4, "sha256"),  # DHE_RSA
    0x009F: ("aes-gcm", 32, 4, "sha384"),
    0xC02B: ("aes-gcm", 16, 4, "sha256"),  # ECDHE_ECDSA
    0xC02C: ("aes-gcm", 32, 4, "sha384"),
    0xC02F: ("aes-gcm", 16, 4, "sha256"),  # ECDHE_RSA
    0xC030: ("aes-gcm", 32, 4, "sha384"),
    0xCCA8: ("chacha", 32, 12, "sha256"),  # ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
    0xCCA9: ("chacha", 32, 12, "sha256"),  # ECDHE_ECDSA
    0xCCAA: ("chacha", 32, 12, "sha256"),  # DHE_RSA
}
# TLS 1.3 suites: id → (cipher, key length, hash)
SUITES_13 = {
    0x1301: ("aes-gcm", 16, "sha256"),
    0x1302: ("aes-gcm", 32, "sha384"),
    0x1303: ("chacha", 32, "sha256"),
    0x1304: ("aes-ccm", 16, "sha256"),
}
_HASHES = {"sha256": hashes.SHA256, "sha384": hashes.SHA384}


class KeyLogError(ValueError):
    """A file that is not an NSS key log."""


class KeyLog:
    """The secrets of a key log, by client random."""

    __slots__ = ("secrets",)

    def __init__(self, secrets: dict[bytes, dict[str, bytes]] | None = None) -> None:
        self.secrets = secrets or {}

    def __len__(self) -> int:
        return len(self.secrets)

    def get(self, client_random: bytes) -> dict[str, bytes] | None:
        return self.secrets.get(client_random)

    @classmethod
    def parse(cls, text: str | bytes) -> KeyLog:
        """Reads NSS key log lines; comments, blank lines and labels it has no use for (RSA
        pre-master secrets) are skipped. Raises KeyLogError when no line is a key."""
        if isinstance(text, bytes):
            text = text.decode("ascii", "replace")
        secrets: dict[bytes, dict[str, bytes]] = {}
        for line in text.splitlines():
            parts = line.split()
            if len(parts) != 3 or parts[0] not in LABELS:
                continue
            try:
                client_random, secret = bytes.fromhex(parts[1]), bytes.fromhex(parts[2])
            except ValueError:
                continue
            if len(client_random) != 32 or not 32 <= len(secret) <= 64:
                continue
            secrets.setdefault(client_random, {})[parts[0]] = secret
        if not secrets:
            raise KeyLogError(
                "not a TLS key log: no line like 'CLIENT_RANDOM <64 hex digits> <secret>' "
                "(the NSS format SSLKEYLOGFILE writes)"
            )
        return cls(secrets)

    @classmethod
    def from_path(cls, path: str | Path) -> KeyLog:
        path = Path(path)
        try:
            with open(path, "rb") as fp:
                data = fp.read(MAX_KEYLOG_BYTES + 1)
        except OSError as exc:
            raise KeyLogError(f"{path}: {exc.strerror or exc}") from exc
        if len(data) > MAX_KEYLOG_BYTES:
            raise KeyLogError(f"{path}: larger than {MAX_KEYLOG_BYTES >> 20} MB")
        try:
            return cls.parse(data)
        except KeyLogError as exc:
            raise KeyLogError(f"{path}: {exc}") from exc


# -- key derivation --------------------------------------------------------------------------


def prf12(secret: bytes, label: bytes, seed: bytes, length: int, digest: str) -> bytes:
    """The TLS 1.2 PRF (RFC 5246 §5): P_hash(secret, label + seed)."""
    seed = label + seed
    out, a = b"", seed
    while len(out) < length:
        a = hmac.new(secret, a, digest).digest()
        out += hmac.new(secret, a + seed, digest).digest()
    return out[:length]


def hkdf_expand_label(secret: bytes, label: str, context: bytes, length: int, digest: str):
    """HKDF-Expand-Label (RFC 8446 §7.1)."""
    full = b"tls13 " + label.encode()
    info = struct.pack("!HB", length, len(full)) + full + bytes([len(context)]) + context
    return HKDFExpand(_HASHES[digest](), length, info).derive(secret)


def _aead(cipher: str, key: bytes):
    if cipher == "aes-gcm":
        return AESGCM(key)
    if cipher == "chacha":
        return ChaCha20Poly1305(key)
    return AESCCM(key, tag_length=16)


class _Keys:
    """One direction's record protection: the AEAD, its IV and the record sequence number."""

    __slots__ = ("aead", "cipher", "iv", "secret", "seq")

    def __init__(self, cipher: str, key: bytes, iv: bytes, secret: bytes | None = None):
        self.cipher = cipher
        self.aead = _aead(cipher, key)
        self.iv = iv
        self.seq = 0
        self.secret = secret  # TLS 1.3: the traffic secret, for a KeyUpdate

    def nonce(self) -> bytes:
        padded = self.seq.to_bytes(len(self.iv), "big")
        return bytes(a ^ b for a, b in zip(self.iv, padded, strict=True))


def _keys13(secret: bytes, suite: tuple) -> _Keys:
    cipher, key_len, digest = suite
    key = hkdf_expand_label(secret, "key", b"", key_len, digest)
    iv = hkdf_expand_label(secret, "iv", b"", 12, digest)
    return _Keys(cipher, key, iv, secret)


# -- a connection ----------------------------------------------------------------------------

WAITING = "waiting for the handshake"
NO_KEY = "no key for this connection in the key log"


class TlsSession:
    """Decrypts the records of one TLS connection, both directions (0: client → server).

    `feed` takes each direction's in-order bytes and returns what it decrypted: ("hs", (type,
    body)) for each handshake message, ("app", plaintext) for application data, ("alert", (level,
    description)). `status` says in a few words why nothing is decrypted, or None once
    records are (unless it stopped part way: then it says so, and why); `decrypted` counts
    the records decrypted."""

    def __init__(self, keylog: KeyLog) -> None:
        self.keylog = keylog
        self.buffers = [b"", b""]
        self.handshake = [b"", b""]  # plaintext handshake bytes until the hellos are read
        self.client_random: bytes | None = None
        self.version: int | None = None
        self.suite: int | None = None
        self.keys: list[_Keys | None] = [None, None]
        self.pending: list[_Keys | None] = [None, None]  # TLS 1.2: active from the CCS on
        self.application: list[bytes | None] = [None, None]  # TLS 1.3: traffic secret 0
        self.stopped = [False, False]
        self.status: str | None = WAITING
        self.decrypted = 0

    def reading(self, direction: int) -> bool:
        """Whether this direction still needs every byte in order (after a hole, the TCP
        reader should wait for the retransmission rather than skip)."""
        return not self.stopped[direction] and self.status in (None, WAITING)

    def held(self, direction: int) -> int:
        """Bytes held for this direction: a record not yet whole, handshake messages."""
        return len(self.buffers[direction]) + len(self.handshake[direction])

    def give_up(self, direction: int, why: str) -> None:
        self._stop(direction, why)
        self.handshake[direction] = b""

    def gap(self, direction: int) -> None:
        """Bytes of this direction went missing: record boundaries and the sequence number
        are lost, so its decryption stops here."""
        if not self.stopped[direction]:
            self.stopped[direction] = True
            self.buffers[direction] = self.handshake[direction] = b""
            if self.decrypted == 0 and self.status in (None, WAITING):
                self.status = "bytes missing from the capture before the first record"
            elif self.status is None:
                self.status = "stopped part way: bytes missing from the capture"

    def feed(self, direction: int, data: bytes) -> list[tuple[str, object]]:
        if self.stopped[direction]:
            return []
        buffer = self.buffers[direction] + data
        events: list[tuple[str, object]] = []
        offset = 0
        while len(buffer) - offset >= 5:
            ctype, major, _minor, length = struct.unpack_from("!BBBH", buffer, offset)
            if major != 3 or ctype not in (20, 21, 22, 23, 24) or length > MAX_RECORD:
                self._stop(direction, None)
                return events
            if len(buffer) - offset < 5 + length:
                break
            header = buffer[offset : offset + 5]
            record = buffer[offset + 5 : offset + 5 + length]
            offset += 5 + length
            self._record(direction, ctype, header, record, events)
            if self.stopped[direction]:
                return events
        self.buffers[direction] = buffer[offset:]
        return events

    def _stop(self, direction: int, why: str | None) -> None:
        self.stopped[direction] = True
        self.buffers[direction] = b""
        if why:
            self.status = why if self.decrypted == 0 else f"stopped part way: {why}"

    def _record(self, direction, ctype, header, record, events) -> None:
        keys = self.keys[direction]
        if ctype == CONTENT_CCS:
            if self.version != TLS13 and self.pending[direction] is not None:
                self.keys[direction] = self.pending[direction]
                self.pending[direction] = None
            return
        if keys is None:
            if ctype == CONTENT_HANDSHAKE:
                self._hello(direction, record)
            elif ctype == CONTENT_APPDATA and self.status == WAITING and self.version is None:
                self._stop(direction, None)  # 0-RTT data or not TLS as we know it
            return
        plain = self._decrypt(direction, keys, ctype, header, record)
        if plain is None:
            return
        ctype, content = plain
        self.decrypted += 1
        if self.status == WAITING:
            self.status = None
        if ctype == CONTENT_APPDATA:
            events.append(("app", content))
        elif ctype == CONTENT_ALERT and len(content) >= 2:
            events.append(("alert", (content[0], content[1])))
        elif ctype == CONTENT_HANDSHAKE:
            self._encrypted_handshake(direction, content, events)

    def _decrypt(self, direction, keys, ctype, header, record):
        """(content type, plaintext) of one protected record, or None (and the direction
        stopped) when it does not decrypt."""
        try:
            if self.version == TLS13:
                plain = keys.aead.decrypt(keys.nonce(), record, header)
                keys.seq += 1
                inner = plain.rstrip(b"\0")
                if not inner:
                    raise InvalidTag
                return inner[-1], inner[:-1]
            if keys.cipher == "aes-gcm":
                if len(record) < 24:
                    raise InvalidTag
                nonce, body = keys.iv + record[:8], record[8:]
            else:
                nonce, body = keys.nonce(), record
            aad = struct.pack("!QB", keys.seq, ctype) + header[1:3] + struct.pack(
                "!H", len(body) - 16
            )
            plain = keys.aead.decrypt(nonce, body, aad)
            keys.seq += 1
            return ctype, plain
        except (InvalidTag, ValueError):
            if self.version == TLS13 and self._to_application(direction):
                return self._decrypt(direction, self.keys[direction], ctype, header, record)
            self._stop(direction, "records do not decrypt with the key log's secrets")
            return None

    def _to_application(self, direction: int) -> bool:
        """TLS 1.3 without the handshake secrets (or past a Finished not seen): try the
        application secrets, once."""
        secret = self.application[direction]
        if secret is None:
            return False
        self.application[direction] = None
        self.keys[direction] = _keys13(secret, SUITES_13[self.suite])
        return True

    def _encrypted_handshake(self, direction, content, events) -> None:
        hs = self.handshake[direction] + content
        offset = 0
        while len(hs) - offset >= 4:
            hs_type = hs[offset]
            length = int.from_bytes(hs[offset + 1 : offset + 4], "big")
            if len(hs) - offset < 4 + length:
                break
            body = hs[offset + 4 : offset + 4 + length]
            offset += 4 + length
            events.append(("hs", (hs_type, body)))
            if self.version != TLS13:
                continue
            if hs_type == HS_FINISHED and self.application[direction] is not None:
                self._to_application(direction)
            elif hs_type == HS_KEY_UPDATE:
                keys = self.keys[direction]
                suite = SUITES_13[self.suite]
                secret = hkdf_expand_label(
                    keys.secret, "traffic upd", b"", hashes_len(suite[2]), suite[2]
                )
                self.keys[direction] = _keys13(secret, suite)
        rest = hs[offset:]
        self.handshake[direction] = rest if len(rest) <= MAX_HANDSHAKE else b""

    def _hello(self, direction, record) -> None:
        """Reads the ClientHello and ServerHello from the plaintext handshake; at the
        ServerHello, derives the keys."""
        hs = self.handshake[direction] + record
        offset = 0
        while len(hs) - offset >= 4:
            hs_type = hs[offset]
            length = int.from_bytes(hs[offset + 1 : offset + 4], "big")
            if len(hs) - offset < 4 + length:
                break
            body = hs[offset + 4 : offset + 4 + length]
            offset += 4 + length
            if hs_type == HS_CLIENT_HELLO and direction == 0 and self.client_random is None:
                self.client_random = parse_hello(body, client=True).random
            elif hs_type == HS_SERVER_HELLO and direction == 1:
                hello = parse_hello(body, client=False)
                if hello.random != HELLO_RETRY_RANDOM:
                    self._derive(hello)
        rest = hs[offset:]
        self.handshake[direction] = rest if len(rest) <= MAX_HANDSHAKE else b""

    def _derive(self, hello) -> None:
        self.version = (hello.supported_versions or [hello.version])[0]
        self.suite = hello.cipher_suite
        secrets = self.keylog.get(self.client_random) if self.client_random else None
        if not secrets:
            self.status = NO_KEY
            return
        if self.version == TLS13:
            suite = SUITES_13.get(self.suite)
            if suite is None:
                self.status = f"cipher suite 0x{self.suite:04x} is not supported"
                return
            for direction, side in ((0, "CLIENT"), (1, "SERVER")):
                self.application[direction] = secrets.get(f"{side}_TRAFFIC_SECRET_0")
                handshake = secrets.get(f"{side}_HANDSHAKE_TRAFFIC_SECRET")
                if handshake is not None:
                    self.keys[direction] = _keys13(handshake, suite)
                elif self.application[direction] is not None:
                    self._to_application(direction)
            if self.keys == [None, None]:
                self.status = NO_KEY
            return
        master = secrets.get("CLIENT_RANDOM")
        suite = SUITES_12.get(self.suite)
        if master is None or len(master) != 48:
            self.status = NO_KEY
            return
        if suite is None:
            self.status = f"cipher suite 0x{self.suite:04x} is not supported (only AEAD suites)"
            return
        cipher, key_len, iv_len, digest = suite
        block = prf12(master, b"key expansion", hello.random + self.client_random,
                      2 * (key_len + iv_len), digest)
        client_key, server_key = block[:key_len], block[key_len : 2 * key_len]
        client_iv = block[2 * key_len : 2 * key_len + iv_len]
        server_iv = block[2 * key_len + iv_len :]
        self.pending = [_Keys(cipher, client_key, client_iv), _Keys(cipher, server_key, server_iv)]


def hashes_len(digest: str) -> int:
    return _HASHES[digest].digest_size
