"""The lab's certificate authority and workload certificates, made with the openssl CLI at `up`.

Workload certificates look like Istio's: the identity is a SPIFFE URI in subjectAltName
(spiffe://cluster.local/ns/NAMESPACE/sa/NAME), usable for both server and client auth, short
lived. P-256 keys keep `up` fast on a small machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from captures.lab import netns

VALID_DAYS = "2"
KEY_ARGS = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


@dataclass(frozen=True)
class Identity:
    cert: Path
    key: Path


def spiffe_id(namespace: str, service_account: str) -> str:
    return f"spiffe://cluster.local/ns/{namespace}/sa/{service_account}"


def make_ca(directory: Path) -> Identity:
    directory.mkdir(parents=True, exist_ok=True)
    ca = Identity(directory / "ca.crt", directory / "ca.key")
    netns.run([
        "openssl", "req", "-x509", *KEY_ARGS, "-keyout", str(ca.key), "-out", str(ca.cert),
        "-days", VALID_DAYS, "-subj", "/O=cluster.local/CN=kviz lab root CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    ])
    ca.key.chmod(0o600)
    return ca


def issue(ca: Identity, directory: Path, name: str, uris: list[str],
          dns_names: tuple[str, ...] = ()) -> Identity:
    identity = Identity(directory / f"{name}.crt", directory / f"{name}.key")
    san = ",".join([*(f"URI:{uri}" for uri in uris), *(f"DNS:{dns}" for dns in dns_names)])
    netns.run([
        "openssl", "req", "-x509", *KEY_ARGS, "-keyout", str(identity.key),
        "-out", str(identity.cert), "-CA", str(ca.cert), "-CAkey", str(ca.key),
        "-days", VALID_DAYS, "-subj", "/O=cluster.local",
        "-addext", f"subjectAltName=critical,{san}",
        "-addext", "basicConstraints=critical,CA:FALSE",
        "-addext", "keyUsage=critical,digitalSignature,keyEncipherment",
        "-addext", "extendedKeyUsage=serverAuth,clientAuth",
    ])
    identity.key.chmod(0o600)
    return identity
