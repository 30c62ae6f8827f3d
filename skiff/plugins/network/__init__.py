"""Network plugins: IPAM, the bridge driver, the nftables firewall, port specs and embedded DNS."""
