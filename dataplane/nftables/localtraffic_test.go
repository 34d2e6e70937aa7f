package nftables

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/knftables"

	"github.com/heraldlb/herald/dataplane"
)

// TestLocalTrafficRules (issue 16 items 3 and 4): with the cluster CIDRs, a Service chain first
// marks traffic to its ClusterIP from outside them for masquerading, and an
// externalTrafficPolicy: Local chain sends pods' traffic to the Service chain; a family without
// a CIDR gets neither; MasqueradeAll marks all traffic to the ClusterIP.
func TestLocalTrafficRules(t *testing.T) {
	dump := func(lt dataplane.LocalTraffic) string {
		fake := knftables.NewFake(knftables.InetFamily, TableName)
		b := NewWithInterface(fake)
		b.SetLocalTraffic(lt)
		st := everyFeature()
		if err := b.Sync(context.Background(), dataplane.SyncRequest{State: st, Changed: all(st), Full: true}); err != nil {
			t.Fatal(err)
		}
		return fake.Dump()
	}
	check := func(name, dump string, want, unwanted []string) {
		for _, w := range want {
			if !strings.Contains(dump, w+"\n") {
				t.Errorf("%s: missing: %s", name, w)
			}
		}
		for _, u := range unwanted {
			if strings.Contains(dump, u) {
				t.Errorf("%s: unexpected: %s", name, u)
			}
		}
	}
	withCIDR := dump(dataplane.LocalTraffic{ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")}})
	check("cluster CIDR", withCIDR, []string{
		"add rule inet herald svc4-ns/web/tcp/http ip daddr 10.96.0.10 tcp dport 80 ip saddr != { 10.244.0.0/16 } jump mark-for-masquerade",
		"add rule inet herald ext4-ns/local/tcp/http ip saddr { 10.244.0.0/16 } goto svc4-ns/local/tcp/http",
		"add rule inet herald ext4-ns/remote/tcp/http ip saddr { 10.244.0.0/16 } goto svc4-ns/remote/tcp/http",
	}, []string{
		"svc6-ns/dual/tcp/http ip6 daddr", // no IPv6 cluster CIDR: nothing for IPv6
	})
	if !strings.Contains(withCIDR, "add rule inet herald svc4-ns/web/tcp/http ip daddr 10.96.0.10 tcp dport 80 ip saddr != { 10.244.0.0/16 } jump mark-for-masquerade\nadd rule inet herald svc4-ns/web/tcp/http ip saddr @aff4") {
		t.Error("the masquerade rule does not come first in the Service chain")
	}
	check("masquerade all", dump(dataplane.LocalTraffic{MasqueradeAll: true}), []string{
		"add rule inet herald svc4-ns/web/tcp/http ip daddr 10.96.0.10 tcp dport 80 jump mark-for-masquerade",
		"add rule inet herald svc6-ns/dual/tcp/http ip6 daddr fd00:96::15 tcp dport 80 jump mark-for-masquerade",
	}, []string{"goto svc4-ns/local/tcp/http\nadd rule inet herald ext4-ns/local/tcp/http fib"})
	check("none", dump(dataplane.LocalTraffic{}), nil, []string{"dport 80 jump mark-for-masquerade", "saddr { "})
}

// TestClusterCIDRWithRealPackets (issue 16 items 3 and 4): with the cluster CIDR 10.244.0.0/16,
// a client off the cluster reaching a ClusterIP is masqueraded (the endpoint sees the node),
// a pod keeps its address; a pod reaching the LoadBalancer IP of an externalTrafficPolicy:
// Local Service without a local endpoint is answered by the Service's other endpoints, keeping
// its address, while the client off the cluster is still dropped there.
func TestClusterCIDRWithRealPackets(t *testing.T) {
	pl := newPacketLabNamed(t, "herald-dd-cidr-")
	pl.lab.Run(pl.client, "ip", "route", "add", "10.96.0.0/16", "via", "172.31.1.1")
	pl.lab.Run(pl.client, "ip", "route", "add", "192.0.2.0/24", "via", "172.31.1.1")
	pl.backend.SetLocalTraffic(dataplane.LocalTraffic{ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")}})
	cluster := svcPort("ns", "cluster", "10.96.0.21", 80, beEP(2, 8080))
	local := svcPort("ns", "local", "10.96.0.22", 80, beEP(3, 8080))
	local.LoadBalancerIPs = addrs("192.0.2.22")
	local.ExternalPolicyLocal = true
	local.ShortCircuitEndpoints = local.ClusterEndpoints
	local.ExternalEndpoints = nil // its endpoint counts as another node's
	pl.sync(t, state(cluster, local), true)

	if _, src := pl.mustGet(t, pl.client, "10.96.0.21:80"); src == "172.31.1.2" {
		t.Errorf("the client off the cluster reached the ClusterIP with its own address: not masqueraded")
	}
	pod := pl.lab.NS("be1")
	if _, src := pl.mustGet(t, pod, "10.96.0.21:80"); src != "10.244.1.2" {
		t.Errorf("a pod reached the ClusterIP as %s, want its own address 10.244.1.2", src)
	}
	if be, src := pl.mustGet(t, pod, "192.0.2.22:80"); be != "be3" || src != "10.244.1.2" {
		t.Errorf("a pod to the Local LoadBalancer IP: answered by %s seeing %s, want be3 seeing 10.244.1.2", be, src)
	}
	if body, err := getWithin(pl.client, "192.0.2.22:80", time.Second); err == nil {
		t.Errorf("the client off the cluster reached the Local LoadBalancer IP without local endpoints: %q", body)
	}
}

// TestShortCircuitIgnoresInternalPolicy (issue 16 item 3): with both traffic policies Local,
// the node's (and pods') traffic to the external addresses goes to every endpoint of the
// Service, as kube-proxy sends it to its cluster-policy endpoints, not only to local ones.
func TestShortCircuitIgnoresInternalPolicy(t *testing.T) {
	both := svcPort("ns", "both", "10.96.0.31", 80, ep("10.1.0.31", 80, true))
	both.LoadBalancerIPs = addrs("192.0.2.31")
	both.ExternalPolicyLocal, both.InternalPolicyLocal = true, true
	both.ShortCircuitEndpoints = []dataplane.Endpoint{ep("10.1.0.31", 80, true), ep("10.2.0.31", 80, false)}
	fake := knftables.NewFake(knftables.InetFamily, TableName)
	b := NewWithInterface(fake)
	b.SetLocalTraffic(dataplane.LocalTraffic{ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")}})
	st := state(both)
	if err := b.Sync(context.Background(), dataplane.SyncRequest{State: st, Changed: all(st), Full: true}); err != nil {
		t.Fatal(err)
	}
	dump := fake.Dump()
	for _, w := range []string{
		"add rule inet herald ext4-ns/both/tcp/http ip saddr { 10.244.0.0/16 } goto sc4-ns/both/tcp/http",
		"add rule inet herald ext4-ns/both/tcp/http fib saddr type local goto sc4-ns/both/tcp/http",
		"add rule inet herald sc4-ns/both/tcp/http meta l4proto tcp dnat ip to 10.2.0.31:80",
	} {
		if !strings.Contains(dump, w+"\n") {
			t.Errorf("missing: %s", w)
		}
	}
	if t.Failed() {
		t.Log(dump)
	}
}
