package speaker

import (
	"cmp"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/heraldlb/herald/config/addresspool"
	"github.com/heraldlb/herald/config/v1beta1"
)

// serviceIndex holds the handled LoadBalancer Services by ingress IP, kept up to date from the
// Service informer's events. Why: a snapshot that listed every cached Service and regrouped them
// all cost, with a thousand Services, a third of each speaker's CPU per Service created in the
// BGP lab bench; with the index, a change costs in proportion to the Services it touches.
//
// The Service lists it hands out are never modified afterwards (a change replaces an IP's list),
// so snapshots may keep them.
type serviceIndex struct {
	lbClass string

	mu sync.Mutex
	// ipsOf is the IPs each indexed Service is listed under.
	ipsOf map[types.NamespacedName][]netip.Addr
	// services are the Services of each IP, sorted by namespace/name.
	services map[netip.Addr][]*corev1.Service
	// changed are the IPs whose Services changed since the last take.
	changed map[netip.Addr]struct{}
}

func newServiceIndex(lbClass string) *serviceIndex {
	return &serviceIndex{lbClass: lbClass, ipsOf: map[types.NamespacedName][]netip.Addr{},
		services: map[netip.Addr][]*corev1.Service{}, changed: map[netip.Addr]struct{}{}}
}

// set indexes the Service key as svc (nil: deleted) and reports whether any IP's Services changed:
// a Service without ingress IPs, before and after, changes nothing a snapshot holds.
func (x *serviceIndex) set(key types.NamespacedName, svc *corev1.Service) bool {
	ips := handledIPs(svc, x.lbClass)
	x.mu.Lock()
	defer x.mu.Unlock()
	old := x.ipsOf[key]
	if len(old) == 0 && len(ips) == 0 {
		return false
	}
	for _, ip := range old {
		x.replace(ip, key, nil)
	}
	for _, ip := range ips {
		x.replace(ip, key, svc)
	}
	if len(ips) == 0 {
		delete(x.ipsOf, key)
	} else {
		x.ipsOf[key] = ips
	}
	return true
}

// replace sets key's entry among ip's Services to svc (nil: none), in a new list.
func (x *serviceIndex) replace(ip netip.Addr, key types.NamespacedName, svc *corev1.Service) {
	list := slices.DeleteFunc(slices.Clone(x.services[ip]), func(s *corev1.Service) bool {
		return s.Namespace == key.Namespace && s.Name == key.Name
	})
	if svc != nil {
		i, _ := slices.BinarySearchFunc(list, svc, compareServices)
		list = slices.Insert(list, i, svc)
	}
	if len(list) == 0 {
		delete(x.services, ip)
	} else {
		x.services[ip] = list
	}
	x.changed[ip] = struct{}{}
}

// take returns the Services of the IPs changed since the last take (an IP without Services maps
// to nil), or, with all, of every IP.
func (x *serviceIndex) take(all bool) map[netip.Addr][]*corev1.Service {
	x.mu.Lock()
	defer x.mu.Unlock()
	var out map[netip.Addr][]*corev1.Service
	if all {
		out = maps.Clone(x.services)
	} else {
		out = make(map[netip.Addr][]*corev1.Service, len(x.changed))
		for ip := range x.changed {
			out[ip] = x.services[ip]
		}
	}
	clear(x.changed)
	return out
}

// handledIPs lists the ingress IPs of svc, once each, if Herald handles it (a LoadBalancer
// Service of its class).
func handledIPs(svc *corev1.Service, lbClass string) []netip.Addr {
	if svc == nil || svc.Spec.Type != corev1.ServiceTypeLoadBalancer ||
		svc.Spec.LoadBalancerClass != nil && *svc.Spec.LoadBalancerClass != lbClass {
		return nil
	}
	var ips []netip.Addr
	for _, ing := range svc.Status.LoadBalancer.Ingress {
		// Unmapped as the controller's allocator reads a status: ::ffff:10.0.0.1 is 10.0.0.1.
		if ip, err := netip.ParseAddr(ing.IP); err == nil && !slices.Contains(ips, ip.Unmap()) {
			ips = append(ips, ip.Unmap())
		}
	}
	return ips
}

func compareServices(a, b *corev1.Service) int {
	return cmp.Or(strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Name, b.Name))
}

// ipTable turns the index into Snapshot.IPs, keeping the last result: a snapshot recomputes the
// IPs whose Services changed since the one before, and every IP only when the pools changed.
// Only the speaker's snapshot loop uses it.
type ipTable struct {
	pools []*v1beta1.IPAddressPool // what owners was built from
	// owners says which pool owns an IP: the pool the controller gave it from, or one being
	// deleted (or become invalid) that still holds it for its Services (addresspool.Set).
	owners *addresspool.Set
	ips    []ServiceIP
}

// update returns the pools and the IPs of the next snapshot; pools are the cached pools, sorted
// (addresspool.SortObjects). While none of them changed, the previous snapshot's pool objects are
// returned, so every ServiceIP.Pool is one of the snapshot's Pools.
func (t *ipTable) update(pools []*v1beta1.IPAddressPool, index *serviceIndex) ([]*v1beta1.IPAddressPool, []ServiceIP) {
	if t.owners != nil && samePools(t.pools, pools) {
		t.ips = mergeIPs(t.ips, index.take(false), t.owners)
	} else {
		parsed := make([]addresspool.Pool, len(pools))
		for i, p := range pools {
			parsed[i] = addresspool.Parse(p)
		}
		t.pools, t.owners = pools, addresspool.NewSet(parsed)
		t.ips = mergeIPs(nil, index.take(true), t.owners)
	}
	return t.pools, t.ips
}

// mergeIPs returns a new list: ips (sorted by IP) with the entries of the changed IPs replaced by
// their Services now. An IP without Services, or in no pool, has no entry.
func mergeIPs(ips []ServiceIP, changed map[netip.Addr][]*corev1.Service, owners *addresspool.Set) []ServiceIP {
	out := make([]ServiceIP, 0, len(ips)+len(changed))
	for _, ip := range slices.SortedFunc(maps.Keys(changed), netip.Addr.Compare) {
		i, found := slices.BinarySearchFunc(ips, ip, compareIP)
		out = append(out, ips[:i]...)
		if found {
			i++
		}
		ips = ips[i:]
		if services := changed[ip]; len(services) > 0 {
			if pool := owners.Owner(ip); pool != nil {
				out = append(out, ServiceIP{IP: ip, Pool: pool.Object, Services: services})
			}
		}
	}
	return append(out, ips...)
}

// samePools reports whether b, in order, are the pools of a unchanged (by resourceVersion).
func samePools(a, b []*v1beta1.IPAddressPool) bool {
	return slices.EqualFunc(a, b, func(a, b *v1beta1.IPAddressPool) bool {
		return a.UID == b.UID && a.Name == b.Name && a.ResourceVersion != "" && a.ResourceVersion == b.ResourceVersion
	})
}
