package speaker

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/heraldlb/herald/config"
	"github.com/heraldlb/herald/config/addresspool"
	"github.com/heraldlb/herald/config/v1beta1"
)

// serviceIPs is Snapshot.IPs for these Services and pools (sorted by addresspool.SortObjects), built from an
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
	addresspool.SortObjects(poolsV2)
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

// TestSnapshotPoolIsTheOwner: an IP's pool in a snapshot is the one the controller gave it from
// (addresspool.Set), so the advertisements of that pool announce it. The old lookup took the
// oldest pool with a block holding the IP as written: an invalid older pool took the IP from the
// valid pool that gave it out, an IPv4-in-IPv6 block held no IPv4 address, and a status address
// written IPv4-in-IPv6 was in no pool.
func TestSnapshotPoolIsTheOwner(t *testing.T) {
	at := func(p *v1beta1.IPAddressPool, age int64) *v1beta1.IPAddressPool {
		p.CreationTimestamp = metav1.Unix(age, 0)
		return p
	}
	leaving := at(pool("leaving", nil, "10.3.0.0/24"), 0)
	leaving.DeletionTimestamp = ptr.To(metav1.Unix(100, 0))
	pools := []*v1beta1.IPAddressPool{
		at(pool("new", nil, "10.0.0.128-10.0.1.5"), 2),
		at(pool("old", nil, "10.0.0.0/24"), 1),
		at(pool("broken", nil, "10.1.0.0/24", "10.1.0.9-10.1.0.1"), 0),
		at(pool("fixed", nil, "10.1.0.0/25"), 3),
		at(pool("mapped", nil, "::ffff:10.2.0.0/120"), 3),
		leaving,
		at(pool("successor", nil, "10.3.0.128/25"), 4),
	}
	addresspool.SortObjects(pools)
	want := map[string]string{"10.0.0.200": "old", "10.0.1.5": "new", "10.0.1.6": "", "::ffff:10.0.0.1": "old",
		"10.1.0.5": "fixed", "10.1.0.200": "broken", "10.2.0.7": "mapped", "10.3.0.1": "leaving", "10.3.0.200": "successor"}
	var services []*corev1.Service
	for ip := range want {
		services = append(services, lbService("default", "s-"+ip, corev1.ServiceExternalTrafficPolicyCluster, nil, ip))
	}
	got := map[string]string{}
	for _, sip := range serviceIPs(services, pools, config.DefaultLoadBalancerClass) {
		for _, svc := range sip.Services {
			got[strings.TrimPrefix(svc.Name, "s-")] = sip.Pool.Name
			if svc.Name == "s-::ffff:10.0.0.1" && sip.IP != netip.MustParseAddr("10.0.0.1") {
				t.Errorf("status ::ffff:10.0.0.1 is announced as %s, want 10.0.0.1 as the allocator reads it", sip.IP)
			}
			if !slices.Contains(pools, sip.Pool) {
				t.Errorf("%s: pool %s is not one of the snapshot's", sip.IP, sip.Pool.Name)
			}
		}
	}
	for ip, pool := range want {
		if got[ip] != pool {
			t.Errorf("%s: pool %q, want %q", ip, got[ip], pool)
		}
	}
}
