package dataplane_test

import (
	"context"
	"net/netip"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"

	"github.com/heraldlb/herald/e2e/lab"
	"github.com/heraldlb/herald/e2e/lab/labsuite"
)

// TestSessionAffinityKeepsAClientOnOneBackend: with sessionAffinity: ClientIP every request from
// the client lands on the same backend, while a Service without affinity spreads the same
// client's requests over several.
func TestSessionAffinityKeepsAClientOnOneBackend(t *testing.T) {
	l := labsuite.Lab(t)
	ctx := context.Background()
	cs, dyn := labsuite.Clients(t, l)
	l2Pool(t, dyn, "dpe-affinity", "10.77.0.232-10.77.0.233")
	sticky := service(t, l, cs, "sticky", "10.77.0.232", l.Pods(), func(svc *corev1.Service) {
		svc.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
	})
	plain := service(t, l, cs, "plain", "10.77.0.233", l.Pods(), nil)

	const requests = 30
	for _, tc := range []struct {
		svc      *corev1.Service
		backends func(n int) bool
		want     string
	}{
		{sticky, func(n int) bool { return n == 1 }, "one backend"},
		{plain, func(n int) bool { return n > 1 }, "more than one backend"},
	} {
		addr := lbAddr(tc.svc)
		waitForAnswers(t, l, lab.HostClient, addr)
		counts, err := l.Spread(ctx, lab.HostClient, addr, requests, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if counts[""] > 0 || !tc.backends(len(backends(counts))) {
			t.Errorf("Service %s (sessionAffinity %s): %d requests from the client answered by %v (failures under \"\"), want %s",
				tc.svc.Name, tc.svc.Spec.SessionAffinity, requests, counts, tc.want)
		}
	}
}

// TestSessionAffinityEndsAfterItsTimeout: with sessionAffinityConfig.clientIP.timeoutSeconds 1
// the client's requests stick to one backend while they come less than a second apart, and after
// 1.5 s of silence it can land on another: over 10 such pauses it reaches more than one backend
// (all 10 pauses ending on the first backend again has a chance of (1/3)^9, about 1 in 20,000).
func TestSessionAffinityEndsAfterItsTimeout(t *testing.T) {
	l := labsuite.Lab(t)
	ctx := context.Background()
	cs, dyn := labsuite.Clients(t, l)
	l2Pool(t, dyn, "dpe-affinity-timeout", "10.77.0.242/32")
	svc := service(t, l, cs, "sticky-briefly", "10.77.0.242", l.Pods(), func(svc *corev1.Service) {
		svc.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
		svc.Spec.SessionAffinityConfig = &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: ptr.To(int32(1))}}
	})
	addr := lbAddr(svc)
	waitForAnswers(t, l, lab.HostClient, addr)
	seen := map[string]int{}
	for i := 0; i < 10; i++ {
		time.Sleep(1500 * time.Millisecond)
		counts, err := l.Spread(ctx, lab.HostClient, addr, 5, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		got := backends(counts)
		if counts[""] > 0 || len(got) != 1 {
			t.Fatalf("5 requests in a row from the client (within the affinity's timeout) answered by %v (failures under \"\"), want one backend", counts)
		}
		seen[got[0]]++
	}
	if len(seen) < 2 {
		t.Errorf("after each of 10 pauses longer than the affinity's timeout the client landed on %v, want more than one backend", seen)
	}
	t.Logf("backends after the pauses: %v", seen)
}

// TestSourceRangesDropOtherClients: with loadBalancerSourceRanges holding only the client, the
// client gets answers at the LoadBalancer IP while the router's connection attempts go unanswered
// (dropped: no reset, no ICMP error); the router does get answers from a Service without ranges,
// so its silence is the ranges' doing, and from the ranged Service's NodePort, which the ranges
// do not guard.
func TestSourceRangesDropOtherClients(t *testing.T) {
	l := labsuite.Lab(t)
	ctx := context.Background()
	cs, dyn := labsuite.Clients(t, l)
	l2Pool(t, dyn, "dpe-ranges", "10.77.0.234-10.77.0.235")
	client := l.Topology.Host(lab.HostClient)
	ranged := service(t, l, cs, "ranged", "10.77.0.234", l.Pods(), func(svc *corev1.Service) {
		svc.Spec.LoadBalancerSourceRanges = []string{netip.PrefixFrom(client.IPv4, 32).String()}
	})
	open := service(t, l, cs, "open", "10.77.0.235", l.Pods(), nil)

	waitForAnswers(t, l, lab.HostClient, lbAddr(ranged))
	waitForAnswers(t, l, lab.HostRouter, lbAddr(open))
	for i := 0; i < 3; i++ {
		if got, err := connect(ctx, l, lab.HostRouter, lbAddr(ranged), 1500*time.Millisecond); got != unanswered {
			t.Fatalf("attempt %d from the router (outside the ranges) to %s: %s (%v), want no answer (dropped)", i+1, lbAddr(ranged), got, err)
		}
	}
	if counts, err := l.Spread(ctx, lab.HostClient, lbAddr(ranged), 10, 2*time.Second); err != nil || counts[""] > 0 {
		t.Errorf("the client (inside the ranges) after the router's attempts: answers per backend %v %v", counts, err)
	}
	// The ranges guard the LoadBalancer IP only (as kube-proxy's): the Service's NodePort still
	// answers the router.
	nodePort := netip.AddrPortFrom(l.Nodes()[0].IPv4, uint16(ranged.Spec.Ports[0].NodePort))
	if r, err := l.Get(ctx, lab.HostRouter, nodePort, 2*time.Second); err != nil {
		t.Errorf("the router at the NodePort %s of the Service with source ranges: %+v %v", nodePort, r, err)
	}
}

// TestInternalTrafficPolicyLocal: with internalTrafficPolicy: Local a node's connections to the
// ClusterIP reach only the endpoints on that node, and a node without one gets no answer (the
// Service has endpoints elsewhere, so its packets are dropped, as kube-proxy does).
func TestInternalTrafficPolicyLocal(t *testing.T) {
	l := labsuite.Lab(t)
	ctx := context.Background()
	cs, dyn := labsuite.Clients(t, l)
	l2Pool(t, dyn, "dpe-internal", "10.77.0.240/32")
	nodes := l.Nodes()
	svc := service(t, l, cs, "internal", "10.77.0.240", podsOn(l, nodes[0].Name, nodes[1].Name), func(svc *corev1.Service) {
		svc.Spec.InternalTrafficPolicy = ptr.To(corev1.ServiceInternalTrafficPolicyLocal)
	})
	clusterIP := clusterAddr(svc, 0)
	for _, n := range nodes[:2] {
		requireAnsweredBy(t, l, n.Name, clusterIP, podsOn(l, n.Name))
	}
	if got, err := connect(ctx, l, nodes[2].Name, clusterIP, 1500*time.Millisecond); got != unanswered {
		t.Errorf("ClusterIP %s from %s, which has no endpoint of its own: %s (%v), want no answer (dropped)", clusterIP, nodes[2].Name, got, err)
	}
}
