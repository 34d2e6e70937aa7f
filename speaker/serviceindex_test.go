package speaker

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/heraldlb/herald/config"
	"github.com/heraldlb/herald/config/v1beta1"
)

// serviceIPs is Snapshot.IPs for these Services and pools (sorted by sortPools), built from an
// empty index.
func serviceIPs(services []*corev1.Service, pools []*v1beta1.IPAddressPool, lbClass string) []ServiceIP {
	x := newServiceIndex(lbClass)
	for _, svc := range services {
		x.set(types.NamespacedName{Namespace: svc.Namespace, Name: svc.Name}, svc)
	}
	var t ipTable
	_, ips := t.update(pools, x)
	return ips
}

func TestServiceIndexSkipsServicesWithoutIPs(t *testing.T) {
	x := newServiceIndex(config.DefaultLoadBalancerClass)
	other := "other.io/lb"
	key := types.NamespacedName{Namespace: "default", Name: "web"}
	for _, svc := range []*corev1.Service{
		lbService("default", "web", corev1.ServiceExternalTrafficPolicyCluster, nil),
		lbService("default", "web", corev1.ServiceExternalTrafficPolicyCluster, &other, "10.0.0.1"),
		nil,
	} {
		if x.set(key, svc) {
			t.Errorf("set(%v) changed the index: no IP of a Service Herald handles", svc)
		}
	}
	if !x.set(key, lbService("default", "web", corev1.ServiceExternalTrafficPolicyCluster, nil, "10.0.0.1")) {
		t.Fatal("a Service given an IP did not change the index")
	}
	if !x.set(key, nil) {
		t.Fatal("deleting a Service with an IP did not change the index")
	}
	if got := x.take(true); len(got) != 0 {
		t.Fatalf("index after the deletion: %v", got)
	}
}

// TestIPTableIncremental checks that snapshots built change by change hold what a snapshot built
// from scratch holds, and that an earlier snapshot's IPs are left as they were.
func TestIPTableIncremental(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	poolsV1 := []*v1beta1.IPAddressPool{pool("a", nil, "10.0.0.0/29"), pool("b", nil, "10.0.0.4-10.0.0.12", "2001:db8::/126")}
	poolsV2 := []*v1beta1.IPAddressPool{pool("a", nil, "10.0.0.0/29"), pool("b", nil, "10.0.0.0-10.0.0.12", "2001:db8::/126")}
	for i, p := range poolsV1 {
		p.UID, p.ResourceVersion = types.UID(p.Name), "1"
		p.CreationTimestamp = metav1.Unix(int64(i), 0)
	}
	for i, p := range poolsV2 {
		p.UID, p.ResourceVersion = types.UID(p.Name), "2"
		p.CreationTimestamp = metav1.Unix(int64(1-i), 0) // b is older now: it holds the overlap
	}
	sortPools(poolsV2)
	addrs := []string{"10.0.0.1", "10.0.0.5", "10.0.0.9", "10.0.0.13", "2001:db8::1", "2001:db8::9"}

	x := newServiceIndex(config.DefaultLoadBalancerClass)
	var table ipTable
	current := map[types.NamespacedName]*corev1.Service{}
	pools := poolsV1
	var earlier []ServiceIP
	var earlierCopy []ServiceIP
	for step := range 400 {
		if step == 200 {
			pools = poolsV2
		}
		key := types.NamespacedName{Namespace: "default", Name: fmt.Sprintf("s%d", rng.IntN(12))}
		var svc *corev1.Service
		if rng.IntN(4) > 0 {
			var ips []string
			for range rng.IntN(3) {
				ips = append(ips, addrs[rng.IntN(len(addrs))])
			}
			svc = lbService(key.Namespace, key.Name, corev1.ServiceExternalTrafficPolicyCluster, nil, ips...)
			svc.Labels["step"] = fmt.Sprint(step) // a new version, as the informer hands out
			current[key] = svc
		} else {
			delete(current, key)
		}
		x.set(key, svc)
		if rng.IntN(3) > 0 {
			continue // several changes between two snapshots
		}
		_, got := table.update(pools, x)
		var all []*corev1.Service
		for _, s := range current {
			all = append(all, s)
		}
		if want := serviceIPs(all, pools, config.DefaultLoadBalancerClass); !equalIPs(got, want) {
			t.Fatalf("step %d: incremental %v, from scratch %v", step, got, want)
		}
		if !equalIPs(earlier, earlierCopy) {
			t.Fatalf("step %d: the previous snapshot's IPs changed", step)
		}
		earlier, earlierCopy = got, slices.Clone(got)
		for i := range earlierCopy {
			earlierCopy[i].Services = slices.Clone(earlierCopy[i].Services)
		}
	}
}

func equalIPs(a, b []ServiceIP) bool {
	return slices.EqualFunc(a, b, func(x, y ServiceIP) bool {
		return x.IP == y.IP && x.Pool.Name == y.Pool.Name && slices.Equal(x.Services, y.Services)
	})
}

func TestPoolSetHolding(t *testing.T) {
	pools := []*v1beta1.IPAddressPool{pool("old", nil, "10.0.0.0/24"), pool("new", nil, "10.0.0.128-10.0.1.5", "bad")}
	s := newPoolSet(pools)
	for ip, want := range map[string]string{"10.0.0.200": "old", "10.0.1.5": "new", "10.0.1.6": "", "::ffff:10.0.0.1": ""} {
		got := ""
		if p := s.holding(netip.MustParseAddr(ip)); p != nil {
			got = p.Name
		}
		if got != want {
			t.Errorf("%s: held by %q, want %q", ip, got, want)
		}
	}
}
