package ipvs

import (
	"context"
	"net/netip"
	"strings"
	"testing"

	"github.com/heraldlb/herald/dataplane"
)

// TestLocalTrafficRules (issue 16 items 3 and 4): the table's rules follow the cluster CIDRs
// and masquerade-all: with a CIDR, pods' traffic gets the short-circuit mark and traffic to
// ClusterIPs from outside the CIDR the masquerade mark; masquerade-all marks all traffic to
// ClusterIPs; a family without a CIDR gets neither. The node's own traffic is marked for the
// short circuit before IPVS (priority mangle), whatever the CIDRs.
func TestLocalTrafficRules(t *testing.T) {
	dump := func(lt dataplane.LocalTraffic) string {
		k := newFakeKernel(t)
		b := k.backend(t)
		b.SetLocalTraffic(lt)
		if err := b.Sync(context.Background(), dataplane.SyncRequest{State: stateOf(lbPort("web", 1, ep("10.1.0.1:8080"))), Full: true}); err != nil {
			t.Fatal(err)
		}
		return k.nft.Dump()
	}
	check := func(name, dump string, want, unwanted []string) {
		t.Helper()
		for _, w := range want {
			if !strings.Contains(dump, w+"\n") {
				t.Errorf("%s: missing %q", name, w)
			}
		}
		for _, u := range unwanted {
			if strings.Contains(dump, u) {
				t.Errorf("%s: unexpected %q", name, u)
			}
		}
		if t.Failed() {
			t.Log(dump)
		}
	}
	const (
		podShortCircuit = "add rule inet herald-ipvs filter-input meta l4proto { tcp, udp, sctp } ip saddr { 10.244.0.0/16 } meta mark set ip daddr . meta l4proto . th dport map @short-circuit-v4 accept"
		podNodePort     = "add rule inet herald-ipvs filter-input meta l4proto { tcp, udp, sctp } ip saddr { 10.244.0.0/16 } ip daddr @nodeport-addrs-v4 meta mark set meta l4proto . th dport map @nodeport-short-circuit-v4 accept"
		outsideMasq     = "add rule inet herald-ipvs filter-input meta l4proto { tcp, udp, sctp } ip daddr . meta l4proto . th dport @clusterip-masquerade-v4 ip saddr != { 10.244.0.0/16 } meta mark set meta mark | 0x4000"
		allMasq         = "add rule inet herald-ipvs filter-input meta l4proto { tcp, udp, sctp } ip daddr . meta l4proto . th dport @clusterip-masquerade-v4 meta mark set meta mark | 0x4000"
		nodeShort       = "add rule inet herald-ipvs mark-output meta l4proto { tcp, udp, sctp } meta mark set ip daddr . meta l4proto . th dport map @short-circuit-v4"
		nodeOutsideMasq = "add rule inet herald-ipvs mark-output meta l4proto { tcp, udp, sctp } ip daddr . meta l4proto . th dport @clusterip-masquerade-v4 ip saddr != { 10.244.0.0/16 } meta mark set meta mark | 0x4000"
		nodeAllMasq     = "add rule inet herald-ipvs mark-output meta l4proto { tcp, udp, sctp } ip daddr . meta l4proto . th dport @clusterip-masquerade-v4 meta mark set meta mark | 0x4000"
		nodeMasq        = "add rule inet herald-ipvs nat-postrouting ip saddr @service-ips-v4 masquerade"
	)
	withCIDR := dump(dataplane.LocalTraffic{ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.7.0/16")}})
	check("cluster CIDR", withCIDR, []string{podShortCircuit, podNodePort, outsideMasq, nodeShort, nodeOutsideMasq, nodeMasq,
		"add element inet herald-ipvs clusterip-masquerade-v4 { 10.96.0.1 . tcp . 80 }"}, []string{"saddr { fd", allMasq})
	check("masquerade all", dump(dataplane.LocalTraffic{MasqueradeAll: true}), []string{allMasq, nodeShort, nodeAllMasq, nodeMasq},
		[]string{"saddr { ", "saddr != { "})
	check("none", dump(dataplane.LocalTraffic{}), []string{nodeShort, nodeMasq},
		[]string{"saddr { ", "saddr != { ", "add element inet herald-ipvs clusterip-masquerade-v4"})
}

// TestShortCircuitVirtualServer (issue 16 item 3): an externalTrafficPolicy: Local port with
// endpoints elsewhere gets a firewall-mark virtual server over every endpoint (internal policy
// not applied), its LoadBalancer IP and NodePort map to the mark, and the mark is derived from
// the NodePort, so a restarted backend adopts the virtual server and sends nothing new. A port
// without a NodePort, or with a Cluster policy, gets none.
func TestShortCircuitVirtualServer(t *testing.T) {
	k := newFakeKernel(t)
	b := k.backend(t)
	local := lbPort("local", 2, ep("10.1.0.3:8080"))
	local.ExternalPolicyLocal, local.InternalPolicyLocal = true, true
	local.ClusterEndpoints, local.ExternalEndpoints = nil, nil // internalTrafficPolicy: Local too
	local.ShortCircuitEndpoints = []dataplane.Endpoint{ep("10.1.0.3:8080"), ep("10.1.0.4:8080")}
	noNodePort := lbPort("nonodeport", 3, ep("10.1.0.5:8080"))
	noNodePort.ExternalPolicyLocal, noNodePort.NodePort = true, 0
	noNodePort.ExternalEndpoints, noNodePort.ShortCircuitEndpoints = nil, noNodePort.ClusterEndpoints
	st := stateOf(local, lbPort("cluster", 4, ep("10.1.0.6:8080")), noNodePort)
	if err := b.Sync(context.Background(), dataplane.SyncRequest{State: st, Full: true}); err != nil {
		t.Fatal(err)
	}
	mark := shortCircuitMark(6, 30002)
	if mark != 0x75321206 {
		t.Errorf("mark %#x, want 0x75321206 (NodePort 30002, tag, TCP)", mark)
	}
	var fwmarks []string
	for _, line := range k.h.dump() {
		if strings.HasPrefix(line, "fwmark:") {
			fwmarks = append(fwmarks, line)
		}
	}
	if want := "fwmark:1966215686 rr [10.1.0.3:8080 w1 10.1.0.4:8080 w1]"; len(fwmarks) != 1 || fwmarks[0] != want {
		t.Errorf("firewall-mark virtual servers %v, want [%s]", fwmarks, want)
	}
	maps := k.nft.Table.Maps
	if e := maps[familyIPv4.set(mapShortCircuit)].FindElement("10.255.0.2", "tcp", "80"); e == nil || e.Value[0] != "0x75321206" {
		t.Errorf("short-circuit map: %+v", e)
	}
	if e := maps[familyIPv4.set(mapNodePortShortCircuit)].FindElement("tcp", "30002"); e == nil || e.Value[0] != "0x75321206" {
		t.Errorf("NodePort short-circuit map: %+v", e)
	}
	if n := len(maps[familyIPv4.set(mapShortCircuit)].Elements); n != 1 {
		t.Errorf("short-circuit map has %d elements, want 1 (none for the Cluster policy or without a NodePort)", n)
	}
	if k.nft.Table.Sets[familyIPv4.set(setNodePortAddrs)].FindElement("192.168.0.5") == nil {
		t.Error("the node address is not in the NodePort addresses")
	}

	// A restart adopts the firewall-mark virtual server: the same sync sends no IPVS change.
	k.h.resetCalls()
	restarted := k.backend(t)
	if err := restarted.Sync(context.Background(), dataplane.SyncRequest{State: st, Full: true}); err != nil {
		t.Fatal(err)
	}
	for _, call := range []string{"NewService", "DelService", "NewDestination", "UpdateDestination"} {
		if k.h.calls[call] != 0 {
			t.Errorf("after a restart: %d %s calls, want none (%v)", k.h.calls[call], call, k.h.calls)
		}
	}
	// The Service gone, its firewall-mark virtual server and map elements go too.
	if err := restarted.Sync(context.Background(), dataplane.SyncRequest{State: stateOf(), Changed: changed("local", "cluster", "nonodeport")}); err != nil {
		t.Fatal(err)
	}
	if d := k.h.dump(); len(d) != 0 {
		t.Errorf("virtual servers left: %v", d)
	}
	if n := len(k.nft.Table.Maps[familyIPv4.set(mapShortCircuit)].Elements); n != 0 {
		t.Errorf("short-circuit map has %d elements left", n)
	}
}
