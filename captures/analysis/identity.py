"""Names for IPs: the inventory as it was at capture time first, then DNS answers seen in the
capture, then the address itself."""

from __future__ import annotations

import ipaddress


class Identity:
    def __init__(self, inventory: dict | None) -> None:
        self.known: dict[str, dict] = {}
        self.from_dns: dict[str, str] = {}
        inventory = inventory or {}
        for node in inventory.get("nodes", []):
            for ip in node.get("addresses", []):
                self.known[ip] = {"name": node["name"], "kind": "node"}
        for service in inventory.get("services", []):
            ips = service.get("cluster_ips") or (
                [service["cluster_ip"]] if service.get("cluster_ip") else []
            )
            for ip in ips:
                if ip and ip != "None":
                    self.known[ip] = {
                        "name": service["name"],
                        "kind": "service",
                        "namespace": service.get("namespace"),
                    }
        for pod in inventory.get("pods", []):
            if pod.get("host_network"):
                continue  # shares its node's address; the node's name is the truer one
            for ip in pod.get("ips", []) or ([pod["ip"]] if pod.get("ip") else []):
                self.known[ip] = {
                    "name": pod["name"],
                    "kind": "pod",
                    "namespace": pod.get("namespace"),
                }

    def learn_dns(self, name: str, ip: str) -> None:
        self.from_dns.setdefault(ip, name.rstrip("."))

    def describe(self, ip: str) -> dict:
        found = self.known.get(ip)
        if found:
            return {"ip": ip, **found}
        if ip in self.from_dns:
            return {"ip": ip, "name": self.from_dns[ip], "kind": "dns-name"}
        try:
            loopback = ipaddress.ip_address(ip).is_loopback
        except ValueError:
            loopback = False
        return {"ip": ip, "name": ip, "kind": "loopback" if loopback else "external"}
