package parity_test

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/heraldlb/herald/e2e/proc"
)

// checkZoneChange moves node A into node B's zone and back: both proxies must re-read the
// node's topology label (kube-proxy's OnNodeUpdate) and send zone-hinted traffic to the
// endpoint hinted for the node's new zone (issue 16 item 2). A Service with zone hints has one
// endpoint on each node, each hinted for its own node's zone: from node A's pod its ClusterIP
// answers from a1 while node A is in zone A, from b1 once it is in zone B.
func checkZoneChange(t *testing.T, cs kubernetes.Interface, procs map[string]proc.Process, within time.Duration) {
	t.Helper()
	c := &svcCase{name: "zone-change", proto: corev1.ProtocolTCP, ranges: rangesNone, topology: topoHints,
		endpoints: []endpoint{{endpointPods[0], conditions[0]}, {endpointPods[2], conditions[0]}}, index: 10100}
	createNamed(t, cs, c)
	dst := netip.AddrPortFrom(c.clusterIP, c.port())

	// answersFrom waits until 8 requests in a row from the client pod are answered by backend
	// on each side (one side after the other), and returns how long that took in all.
	answersFrom := func(backend string) time.Duration {
		began := time.Now()
		for _, side := range sides {
			deadline := time.Now().Add(within)
			for run := 0; run < 8; {
				r := request(nsName(side, "ac"), "TCP", netip.Addr{}, dst, 500*time.Millisecond)
				if r.kind == answered && r.backend == backend {
					run++
					continue
				}
				run = 0
				if !procs[side].Alive() {
					t.Fatalf("%s exited:\n%s", procs[side].Name, procs[side].Tail(4000))
				}
				if time.Now().After(deadline) {
					t.Fatalf("%s: %s still not answered only by %s after %v (last: %s %s %v)", procs[side].Name, dst, backend, within, r.kind, r.backend, r.err)
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
		return time.Since(began).Round(time.Millisecond)
	}
	setZone := func(zone string) {
		node, err := cs.CoreV1().Nodes().Get(t.Context(), nodeA, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		node.Labels[corev1.LabelTopologyZone] = zone
		if _, err := cs.CoreV1().Nodes().Update(t.Context(), node, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	answersFrom("a1")
	setZone(zoneB)
	t.Logf("node A moved to %s: %s answered only from b1 on both sides within %v", zoneB, dst, answersFrom("b1"))
	setZone(zoneA)
	t.Logf("node A back in %s: %s answered only from a1 on both sides within %v", zoneA, dst, answersFrom("a1"))
	if err := cs.CoreV1().Services(namespace).Delete(t.Context(), c.name, metav1.DeleteOptions{}); err != nil {
		t.Error(fmt.Errorf("deleting %s: %w", c.name, err))
	}
	if err := cs.DiscoveryV1().EndpointSlices(namespace).Delete(t.Context(), c.name+"-1", metav1.DeleteOptions{}); err != nil {
		t.Error(fmt.Errorf("deleting %s: %w", c.name+"-1", err))
	}
}
