"""TLS handshake facts from one direction of a TCP stream (RFC 5246, RFC 8446).

The parser sees the bytes of one direction in order and stops reading as soon as the
handshake turns encrypted (ChangeCipherSpec, application data) or a gap makes record
boundaries unknowable, so its memory stays bounded whatever the connection carries.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Final

CONTENT_CCS, CONTENT_ALERT, CONTENT_HANDSHAKE, CONTENT_APPDATA = 20, 21, 22, 23
HS_CLIENT_HELLO, HS_SERVER_HELLO, HS_CERTIFICATE, HS_CERTIFICATE_REQUEST = 1, 2, 11, 13
HS_ENCRYPTED_EXTENSIONS = 8
EXT_SNI, EXT_ALPN, EXT_SUPPORTED_VERSIONS = 0, 16, 43
MAX_BUFFER = 65536

VERSION_NAMES = {
    0x0300: "SSL 3.0",
    0x0301: "TLS 1.0",
    0x0302: "TLS 1.1",
    0x0303: "TLS 1.2",
    0x0304: "TLS 1.3",
}
HANDSHAKE_NAMES: Final = {
    1: "ClientHello",
    2: "ServerHello",
    4: "NewSessionTicket",
    8: "EncryptedExtensions",
    11: "Certificate",
    12: "ServerKeyExchange",
    13: "CertificateRequest",
    14: "ServerHelloDone",
    15: "CertificateVerify",
    16: "ClientKeyExchange",
    20: "Finished",
    24: "KeyUpdate",
}

ALERT_NAMES = {
    0: "close_notify",
    10: "unexpected_message",
    20: "bad_record_mac",
    22: "record_overflow",
    40: "handshake_failure",
    42: "bad_certificate",
    43: "unsupported_certificate",
    44: "certificate_revoked",
    45: "certificate_expired",
    46: "certificate_unknown",
    47: "illegal_parameter",
    48: "unknown_ca",
    49: "access_denied",
    50: "decode_error",
    51: "decrypt_error",
    70: "protocol_version",
    71: "insufficient_security",
    80: "internal_error",
    86: "inappropriate_fallback",
    90: "user_canceled",
    109: "missing_extension",
    110: "unsupported_extension",
    112: "unrecognized_name",
    113: "bad_certificate_status_response",
    115: "unknown_psk_identity",
    116: "certificate_required",
    120: "no_application_protocol",
}
ALERT_FATAL = 2


def alert_name(description: int) -> str:
    return ALERT_NAMES.get(description, f"alert {description}")


def version_name(version: int | None) -> str | None:
    if version is None:
        return None
    return VERSION_NAMES.get(version, f"0x{version:04x}")


def _is_grease(value: int) -> bool:
    return value & 0x0F0F == 0x0A0A and value >> 8 == value & 0xFF


def looks_like_tls(payload: bytes) -> bool:
    return (
        len(payload) >= 6
        and payload[0] in (CONTENT_HANDSHAKE, CONTENT_ALERT, CONTENT_APPDATA, CONTENT_CCS)
        and payload[1] == 3
        and payload[2] <= 4
    )


@dataclass(slots=True)
class Hello:
    version: int = 0
    sni: str | None = None
    alpn: list[str] = field(default_factory=list)
    supported_versions: list[int] = field(default_factory=list)
    random: bytes = b""
    cipher_suite: int | None = None  # the server's choice (ServerHello only)


def parse_hello(body: bytes, client: bool) -> Hello:
    hello = Hello()
    try:
        hello.version = struct.unpack_from("!H", body)[0]
        hello.random = body[2:34]
        offset = 2 + 32
        sid_len = body[offset]
        offset += 1 + sid_len
        if client:
            (cs_len,) = struct.unpack_from("!H", body, offset)
            offset += 2 + cs_len
            offset += 1 + body[offset]
        else:
            (hello.cipher_suite,) = struct.unpack_from("!H", body, offset)
            offset += 2 + 1  # chosen cipher suite, compression method
        if offset + 2 > len(body):
            return hello
        (ext_total,) = struct.unpack_from("!H", body, offset)
        offset += 2
        end = min(offset + ext_total, len(body))
        while offset + 4 <= end:
            ext_type, ext_len = struct.unpack_from("!HH", body, offset)
            data = body[offset + 4 : offset + 4 + ext_len]
            offset += 4 + ext_len
            if ext_type == EXT_SNI and len(data) >= 5 and client:
                name_len = struct.unpack_from("!H", data, 3)[0]
                hello.sni = data[5 : 5 + name_len].decode("ascii", "replace")
            elif ext_type == EXT_ALPN and len(data) >= 2:
                at = 2
                while at < len(data):
                    n = data[at]
                    hello.alpn.append(data[at + 1 : at + 1 + n].decode("ascii", "replace"))
                    at += 1 + n
            elif ext_type == EXT_SUPPORTED_VERSIONS:
                if client and data:
                    hello.supported_versions = [
                        v
                        for v in struct.unpack_from(f"!{data[0] // 2}H", data, 1)
                        if not _is_grease(v)
                    ]
                elif len(data) >= 2:
                    hello.supported_versions = [struct.unpack_from("!H", data)[0]]
    except (IndexError, struct.error):
        pass  # a cut-off hello still gives what was read before the cut
    return hello


class TlsDirection:
    """Feeds in-order bytes of one direction; collects handshake messages until encryption."""

    __slots__ = ("buffer", "done", "encrypted", "handshake", "is_client")

    def __init__(self, is_client: bool) -> None:
        self.is_client = is_client
        self.buffer = b""
        self.handshake = b""  # handshake-layer bytes (messages may span records)
        self.done = False
        self.encrypted = False

    def feed(self, data: bytes) -> list[tuple[str, object]]:
        """The events this chunk completed: ("hs", (type, body)), ("ccs" | "appdata", None),
        ("alert", (level, description)) while the direction is in the clear, else
        ("alert", None): its contents are encrypted."""
        if self.done:
            return []
        self.buffer += data
        events: list[tuple[str, object]] = []
        buffer = self.buffer
        offset = 0
        while len(buffer) - offset >= 5:
            ctype, major, _minor, length = struct.unpack_from("!BBBH", buffer, offset)
            if major != 3 or ctype not in (20, 21, 22, 23, 24):
                self.done = True  # not TLS (or lost alignment): stop reading
                break
            if len(buffer) - offset < 5 + length:
                break
            record = buffer[offset + 5 : offset + 5 + length]
            offset += 5 + length
            if ctype == CONTENT_HANDSHAKE and not self.encrypted:
                self.handshake += record
                events.extend(self._handshake_messages())
            elif ctype == CONTENT_CCS:
                self.encrypted = True
                events.append(("ccs", None))
            elif ctype == CONTENT_APPDATA:
                events.append(("appdata", None))
                self.done = True
                break
            elif ctype == CONTENT_ALERT:
                plain = not self.encrypted and len(record) == 2
                events.append(("alert", (record[0], record[1]) if plain else None))
        self.buffer = buffer[offset:]
        if len(self.buffer) > MAX_BUFFER or len(self.handshake) > MAX_BUFFER:
            self.done = True
        if self.done:
            self.buffer = self.handshake = b""
        return events

    def _handshake_messages(self):
        events = []
        hs = self.handshake
        offset = 0
        while len(hs) - offset >= 4:
            hs_type = hs[offset]
            length = int.from_bytes(hs[offset + 1 : offset + 4], "big")
            if len(hs) - offset < 4 + length:
                break
            events.append(("hs", (hs_type, hs[offset + 4 : offset + 4 + length])))
            offset += 4 + length
        self.handshake = hs[offset:]
        return events

    def gap(self) -> None:
        self.done = True
        self.buffer = self.handshake = b""


def extensions_alpn(body: bytes) -> str | None:
    """The protocol chosen in a TLS 1.3 EncryptedExtensions message (readable once
    decrypted), else None."""
    try:
        (total,) = struct.unpack_from("!H", body)
        offset, end = 2, min(2 + total, len(body))
        while offset + 4 <= end:
            ext_type, ext_len = struct.unpack_from("!HH", body, offset)
            data = body[offset + 4 : offset + 4 + ext_len]
            offset += 4 + ext_len
            if ext_type == EXT_ALPN and len(data) >= 3:
                return data[3 : 3 + data[2]].decode("ascii", "replace")
    except struct.error:
        pass
    return None


def certificate_count(body: bytes) -> int:
    """Number of certificates in a TLS 1.2 Certificate message (0 for an empty one)."""
    if len(body) < 3:
        return 0
    total = int.from_bytes(body[:3], "big")
    count, offset = 0, 3
    while offset + 3 <= min(3 + total, len(body)):
        offset += 3 + int.from_bytes(body[offset : offset + 3], "big")
        count += 1
    return count
