"""Doors to the outside world, one each: dumpcap/tshark (`sniffer`), the Kubernetes API (`k8s`),
and the live decoder that reads a growing capture file (`decode`). The lab and the capture
sources are packages of their own beside this one."""
