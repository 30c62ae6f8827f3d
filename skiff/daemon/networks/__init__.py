"""The daemon's side of networking: networks as the API sees them, container sandboxes
(network namespace, endpoints, published ports, embedded DNS, /etc files) and their restore.

The kernel work is done by ``skiff.plugins.network`` (bridge driver, IPAM, nftables, DNS);
this package decides what to ask of it for each container and keeps the daemon's records.
"""
