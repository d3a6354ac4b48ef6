"""Names for IPs: the inventory as it was at capture time first, then DNS answers seen in the
capture, then the address itself."""

from __future__ import annotations

import ipaddress

# Addresses named from DNS answers: a resolver's capture can hold answers for any number of
# addresses, few of which ever become participants.
MAX_DNS_NAMED = 50_000


class Identity:
    def __init__(self, inventory: dict | None, warnings=None) -> None:
        self.known: dict[str, dict] = {}
        self.from_dns: dict[str, str] = {}
        self.warnings = warnings  # a pcapfile.Warnings, told when MAX_DNS_NAMED is reached
        inventory = inventory or {}
        for node in inventory.get("nodes", []):
            for ip in node.get("addresses", []):
                # "node" on nodes and pods alike: the diagram groups lifelines by it.
                self.known[ip] = {"name": node["name"], "kind": "node", "node": node["name"]}
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
                    **({"node": pod["node"]} if pod.get("node") else {}),
                }

    def node_name(self, ip: str) -> str | None:
        """The node whose address this is (an underlay's end), else None."""
        found = self.known.get(ip)
        return found["name"] if found and found["kind"] == "node" else None

    def learn_dns(self, name: str, ip: str) -> None:
        from_dns = self.from_dns
        if ip in from_dns:
            return
        if len(from_dns) < MAX_DNS_NAMED:
            from_dns[ip] = name.rstrip(".")
        elif self.warnings is not None:
            self.warnings.add(
                f"DNS answers name more than {MAX_DNS_NAMED} addresses: later ones are not "
                "named by them"
            )

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
