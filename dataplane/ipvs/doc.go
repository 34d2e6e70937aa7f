// Package ipvs is Herald's IPVS data-plane backend. It commits the same desired state as the
// nftables backend (package dataplane computes it; no Service logic lives here) as IPVS virtual
// servers, with a dummy link (herald-ipvs0) carrying the Service IPs as local routes so IPVS sees
// their packets in LOCAL_IN, and a small nftables table next to it for what IPVS does not do:
// masquerade, filtering of unknown ports, loadBalancerSourceRanges, rejecting Services without
// endpoints and hairpin traffic (no iptables, no ipset), and the packet marks that send pods' and
// the node's own traffic to an externalTrafficPolicy: Local address to a second, firewall-mark
// virtual server over every endpoint (the short circuit; firewall.go says why).
//
// Kernel access sits behind small interfaces (Handle for IPVS, Links for the dummy link, Sysctls),
// so syncs are unit-tested with fakes; the real kernel is exercised inside a VM booted from Debian's
// cloud kernel (hack/ipvs-vm), because the build machines' kernels have no ip_vs.
package ipvs
