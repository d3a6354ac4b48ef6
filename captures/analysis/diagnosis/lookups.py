"""What went wrong with name lookups: a search list walked before the name that answered, and
a query asked again after the resolver's timeout (with where the lost copy was last seen).

glibc's resolver (and musl's, and Go's) tries a name with fewer dots than `ndots` (5 in a
Kubernetes pod's resolv.conf) with each search domain appended before the name itself, so
`api.example.org` from a pod costs three NXDOMAIN round trips per address family first. Its
timeout is 5 s by default (`options timeout:`), and it sends the A and AAAA queries at once
from one socket: when conntrack loses the race to insert one of them (two UDP packets of a
new flow DNATed at the same moment), that query is dropped on the node and the lookup waits
the whole timeout.
"""

from __future__ import annotations

import bisect
import ipaddress
import itertools
from collections.abc import Mapping

from ..records import endpoint_host
from .loss import trace, where_words
from .places import Places
from .view import CaptureView

SEARCH_WINDOW_S = 30.0  # queries of one lookup follow each other within this
GLIBC_TIMEOUT_S = 5.0


def _failed(exchange: Mapping) -> bool:
    return exchange["rcode"] == "NXDOMAIN" or (
        exchange["rcode"] == "NOERROR" and not exchange["answers"])


def search_expansions(view: CaptureView) -> list[dict]:
    by_client: dict[str, list[Mapping]] = {}
    for exchange in view.dns:
        if exchange["t"] is not None:
            by_client.setdefault(endpoint_host(exchange["client"]), []).append(exchange)
    findings = []
    for client, exchanges in by_client.items():
        exchanges.sort(key=lambda e: e["t"])
        lookups = _Lookups(exchanges)
        for name, first in lookups.first_asked.items():
            # The search list walked first: names with a suffix, failed, before the name.
            tried = lookups.failed_under(name, first["t"] - SEARCH_WINDOW_S, first["t"])
            if tried and first["rcode"] is not None:
                own = lookups.of_name(name, first["t"] - 1e-6, first["t"] + SEARCH_WINDOW_S)
                findings.append(_expansion(view, client, name, first, tried, own))
    return findings


class _Lookups:
    """One client's exchanges (in time order), indexed so that each name costs what its
    labels cost rather than a scan of every exchange: a client that asks many names would
    otherwise make the search quadratic."""

    def __init__(self, exchanges: list[Mapping]) -> None:
        self.first_asked: dict[str, Mapping] = {}
        self.by_name: dict[str, list[Mapping]] = {}
        # "a.b" -> failed exchanges whose name is "a.b.<something>", in time order
        self.failed_by_prefix: dict[str, list[Mapping]] = {}
        for exchange in exchanges:
            name = exchange["name"].rstrip(".")
            self.first_asked.setdefault(name, exchange)
            self.by_name.setdefault(name, []).append(exchange)
            if _failed(exchange):
                labels = name.split(".")
                for cut in range(1, len(labels)):
                    self.failed_by_prefix.setdefault(".".join(labels[:cut]), []).append(
                        exchange)

    @staticmethod
    def _within(exchanges: list[Mapping], start: float, end: float) -> list[Mapping]:
        times = [e["t"] for e in exchanges]
        return exchanges[bisect.bisect_left(times, start):bisect.bisect_right(times, end)]

    def failed_under(self, name: str, start: float, end: float) -> list[Mapping]:
        return self._within(self.failed_by_prefix.get(name, []), start, end)

    def of_name(self, name: str, start: float, end: float) -> list[Mapping]:
        return self._within(self.by_name.get(name, []), start, end)


def _expansion(view, client, name, final, tried, own) -> dict:
    search: list[str] = []
    for exchange in tried:
        suffix = exchange["name"].rstrip(".")[len(name) + 1:]
        if suffix not in search:
            search.append(suffix)
    nxdomain = sum(1 for e in tried if e["rcode"] == "NXDOMAIN")
    extra_ms = round((final["t"] - tried[0]["t"]) * 1000, 3)
    answered = [e for e in own if e["answers"]]
    outcome = (f"before {name} itself answered" if answered
               else f"and {name} itself did not resolve either")
    dots = name.count(".")
    text = (f"{view.names(client)} looked up {name} with each search domain first "
            f"({', '.join(search)}): {len(tried)} extra queries "
            f"({nxdomain} NXDOMAIN) costing {extra_ms:g} ms {outcome}. The name has {dots} "
            f"dot{'s' if dots != 1 else ''}, fewer than the resolver's ndots (5 in a "
            f"Kubernetes pod), so it tries the search list first.")
    evidence = [i for e in [*tried, *own] for i in e.get("messages", [])]
    return {
        "kind": "dns_search_expansion",
        "severity": "warning" if len(tried) >= 4 or extra_ms >= 100 else "note",
        "exchange": final["id"], "text": text,
        "check": (f"use the fully qualified name with a trailing dot ({name}.), or lower "
                  f"ndots for this pod (`dnsConfig: {{options: [{{name: ndots, value: "
                  f"\"2\"}}]}}`); NodeLocal DNSCache makes the misses cheaper"),
        "evidence": evidence, "name": name, "client": client,
        "queries": len(tried) + len(own), "nxdomain": nxdomain, "extra_queries": len(tried),
        "extra_ms": extra_ms, "search": search,
    }


def retries(view: CaptureView, places: Places) -> list[dict]:
    findings = []
    asked: dict[tuple[str, str], list[Mapping]] = {}  # (client, name) -> its exchanges
    for exchange in view.dns:
        if exchange["t"] is not None:
            asked.setdefault((exchange["client"], exchange["name"]), []).append(exchange)
    for exchange in view.dns:
        if not exchange.get("retries") or _multicast(exchange["server"]):
            continue  # mDNS and LLMNR ask again by design, and nobody need answer
        messages = view.of_exchange(exchange)
        places.learn(messages)
        queries = [m for m in messages if m["label"].startswith("DNS query")]
        answers = [m for m in messages if not m["label"].startswith("DNS query")]
        attempts = len(queries) or exchange["retries"] + 1
        waited_ms = exchange.get("latency_ms")
        if waited_ms is None and len(queries) > 1:
            waited_ms = round((queries[-1]["t"] - queries[0]["t"]) * 1000, 3)
        gaps = [b["t"] - a["t"] for a, b in itertools.pairwise(queries)]
        glibc = any(abs(gap - GLIBC_TIMEOUT_S) <= 0.5 for gap in gaps)
        lost_copies = queries[:-1] if answers else queries
        delivered = queries[-1:] if answers else []
        loss = trace(lost_copies, delivered, places) if lost_copies else None
        twin = _twin(asked, exchange)
        name = f"{exchange['type']} {exchange['name']}"
        client = view.names(exchange["client"])
        result = (f"answered after {waited_ms:g} ms" if exchange["rcode"] is not None
                  and waited_ms is not None else "never answered")
        text = f"{client} asked {name} {attempts} times: the first query got no answer"
        if glibc:
            text += " and the resolver asked again after its 5 s timeout (glibc's default)"
        text += f"; {result}."
        if loss is not None and loss.visible:
            text += f" The first query {where_words(loss, places)}."
        elif loss is not None:
            text += (" Where it was lost cannot be seen from inside the pod: capture its node "
                     "(-i any) and the DNS pods too.")
        if twin is not None and (loss is None or loss.after_nat or not loss.visible):
            text += (f" It was sent together with its {twin['type']} twin from the same "
                     f"socket, the pattern of the conntrack insertion race that drops one "
                     f"of two simultaneous UDP queries to a DNATed DNS Service.")
        checks = ["the DNS pods' health and load (`kubectl -n kube-system get pods -l "
                  "k8s-app=kube-dns`, their logs)"]
        if twin is not None:
            checks.append("`options single-request-reopen` in the pod's dnsConfig, or "
                          "NodeLocal DNSCache, against the conntrack race")
        if loss is not None and loss.visible and loss.last_seen.vantage_kind == "node":
            checks.append(f"drops on node {loss.last_seen.vantage_name} "
                          f"(`conntrack -S` insert_failed, `iptables -S FORWARD`)")
        findings.append({
            "kind": "dns_retry",
            "severity": "warning" if exchange["rcode"] is not None else "error",
            "exchange": exchange["id"], "text": text, "check": "; ".join(checks),
            "evidence": [m["id"] for m in messages], "name": exchange["name"],
            "type": exchange["type"], "attempts": attempts, "waited_ms": waited_ms,
            "resolver_timeout": glibc, "same_socket_twin": twin["type"] if twin else None,
            "lost": loss.as_dict() if loss is not None and loss.visible else None,
        })
    return findings


def _multicast(endpoint: str) -> bool:
    try:
        return ipaddress.ip_address(endpoint_host(endpoint)).is_multicast
    except ValueError:
        return False


def _twin(asked: dict[tuple[str, str], list[Mapping]], exchange: Mapping) -> Mapping | None:
    """The other address family's query for the same name from the same socket, sent
    within a few milliseconds of this one."""
    if exchange["t"] is None:
        return None
    for other in asked.get((exchange["client"], exchange["name"]), ()):
        if (other is not exchange and other["type"] != exchange["type"]
                and abs(other["t"] - exchange["t"]) < 0.05):
            return other
    return None


def diagnose(view: CaptureView, places: Places) -> list[dict]:
    return search_expansions(view) + retries(view, places)
