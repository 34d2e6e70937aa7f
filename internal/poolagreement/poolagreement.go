// Package poolagreement is test support: it feeds the same random IPAddressPools and Service IPs
// to every part of Herald that asks "which pool owns this IP" (the controller's allocator and
// Announced condition, the speakers' snapshots, heraldctl status) and checks each answer against
// one brute-force oracle of the rule addresspool.Set documents, so the parts cannot disagree.
// Each caller's test registers the callers it can reach (Run).
package poolagreement

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/heraldlb/herald/config/addresspool"
	"github.com/heraldlb/herald/config/v1beta1"
	"github.com/heraldlb/herald/controller/allocator"
)

// Caller answers, for the pools and the LoadBalancer Services (one ingress IP each, class unset),
// the pool each Service's IP belongs to, by Service name ("" or absent: none).
type Caller func(pools []v1beta1.IPAddressPool, services []corev1.Service) map[string]string

// Cases is how many random cases Run tries.
const Cases = 300

// Run checks every caller against the oracle on the same random cases, and the allocator (which
// gives out addresses, so answers only for live pools) too.
func Run(t *testing.T, callers map[string]Caller) {
	t.Helper()
	for seed := range uint64(Cases) {
		pools, services := generate(newRand(seed))
		want := oracle(pools, services)
		answers := map[string]map[string]string{"allocator": allocatorAnswer(pools, services)}
		for name, call := range callers {
			answers[name] = call(pools, services)
		}
		for _, svc := range services {
			ip := svc.Status.LoadBalancer.Ingress[0].IP
			for name, got := range answers {
				w := want[svc.Name]
				if name == "allocator" && !w.live {
					w.pool = "" // given out by no pool: the Service keeps it with PoolRemoved
				}
				if got[svc.Name] != w.pool {
					t.Errorf("seed %d: %s says %s is in pool %q, the rule says %q; pools:\n%s",
						seed, name, ip, got[svc.Name], w.pool, describe(pools))
				}
			}
		}
		if t.Failed() {
			return
		}
	}
}

type owner struct {
	pool string
	live bool
}

// oracle applies the rule by brute force: of the pools with a block holding the IP, a live one
// before any other, then the oldest, then the first by name.
func oracle(pools []v1beta1.IPAddressPool, services []corev1.Service) map[string]owner {
	out := map[string]owner{}
	for _, svc := range services {
		ip := netip.MustParseAddr(svc.Status.LoadBalancer.Ingress[0].IP).Unmap()
		var best *v1beta1.IPAddressPool
		bestLive := false
		for i := range pools {
			p := &pools[i]
			if !holds(p, ip) {
				continue
			}
			live := p.DeletionTimestamp == nil && valid(p)
			switch {
			case best == nil, live && !bestLive:
			case live != bestLive:
				continue
			case p.CreationTimestamp.Before(&best.CreationTimestamp),
				p.CreationTimestamp.Equal(&best.CreationTimestamp) && p.Name < best.Name:
			default:
				continue
			}
			best, bestLive = p, live
		}
		if best != nil {
			out[svc.Name] = owner{best.Name, bestLive}
		}
	}
	return out
}

func holds(p *v1beta1.IPAddressPool, ip netip.Addr) bool {
	for _, a := range p.Spec.Addresses {
		if b, err := addresspool.ParseBlock(string(a)); err == nil && b.First.Compare(ip) <= 0 && ip.Compare(b.Last) <= 0 {
			return true
		}
	}
	return false
}

func valid(p *v1beta1.IPAddressPool) bool {
	for _, a := range p.Spec.Addresses {
		if _, err := addresspool.ParseBlock(string(a)); err != nil {
			return false
		}
	}
	if sa := p.Spec.ServiceAllocation; sa != nil {
		for _, sel := range slices.Concat(sa.NamespaceSelectors, sa.ServiceSelectors) {
			if _, err := metav1.LabelSelectorAsSelector(&sel); err != nil {
				return false
			}
		}
	}
	return true
}

// allocatorAnswer is the pool the controller's allocator says each Service's IP is from: it is
// given every pool, as the controller gives it, and each Service in turn asks to keep its IP.
func allocatorAnswer(pools []v1beta1.IPAddressPool, services []corev1.Service) map[string]string {
	a := allocator.New()
	var parsed []allocator.Pool
	for i := range pools {
		parsed = append(parsed, allocator.PoolFromAPI(&pools[i]))
	}
	a.SetPools(parsed)
	out := map[string]string{}
	for i := range services {
		s, err := allocator.ServiceFromAPI(&services[i], nil)
		if err != nil {
			panic(err)
		}
		res := a.Assign(s)
		if len(res.IPs) == 1 && res.IPs[0] == s.Current[0].Unmap() {
			out[services[i].Name] = res.Pool
		} else {
			out[services[i].Name] = fmt.Sprintf("(allocator moved it: %v %s %s)", res.IPs, res.Reason, res.Message)
		}
		a.Release(s.Key)
	}
	return out
}

func newRand(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, 19)) }

var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// generate makes up to six pools over a small address space, so they overlap often and tie on
// age often, some being deleted, some malformed (a bad block or selector), with blocks in every
// form ParseBlock reads (CIDRs with host bits, spaced ranges, IPv4-in-IPv6); and one Service per
// IP to look up, some outside every pool, some written IPv4-in-IPv6.
func generate(rng *rand.Rand) ([]v1beta1.IPAddressPool, []corev1.Service) {
	names := []string{"a", "b", "c", "d", "e", "f"}
	rng.Shuffle(len(names), func(i, j int) { names[i], names[j] = names[j], names[i] })
	pools := make([]v1beta1.IPAddressPool, 1+rng.IntN(6))
	for i := range pools {
		p := &pools[i]
		p.Name = names[i]
		p.UID, p.ResourceVersion = types.UID("uid-"+names[i]), "1"
		p.CreationTimestamp = metav1.NewTime(epoch.Add(time.Duration(rng.IntN(3)) * time.Second))
		if rng.IntN(5) == 0 {
			p.DeletionTimestamp = &metav1.Time{Time: epoch.Add(time.Hour)}
		}
		for range 1 + rng.IntN(3) {
			p.Spec.Addresses = append(p.Spec.Addresses, v1beta1.AddressBlock(randomBlock(rng)))
		}
		if rng.IntN(10) == 0 {
			p.Spec.ServiceAllocation = &v1beta1.ServiceAllocation{ServiceSelectors: []metav1.LabelSelector{
				{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "tier", Operator: "In"}}}}} // In without values
		}
	}
	var services []corev1.Service
	for i := range 24 {
		ip := randomIP(rng)
		if rng.IntN(8) == 0 && ip.Is4() {
			ip = netip.AddrFrom16(ip.As16())
		}
		svc := corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: fmt.Sprintf("s%d", i)},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Ports: []corev1.ServicePort{{Port: 80, Protocol: corev1.ProtocolTCP}},
				IPFamilies: []corev1.IPFamily{addresspool.FamilyOf(ip)}}}
		svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: ip.String()}}
		services = append(services, svc)
	}
	return pools, services
}

func randomIP(rng *rand.Rand) netip.Addr {
	if rng.IntN(4) == 0 {
		return netip.AddrFrom16([16]byte{0xfd, 15: byte(rng.IntN(64))})
	}
	return netip.AddrFrom4([4]byte{10, 0, 0, byte(rng.IntN(80))})
}

func randomBlock(rng *rand.Rand) string {
	a, b := randomIP(rng), randomIP(rng)
	if a.Is4() != b.Is4() && rng.IntN(4) > 0 {
		b = a
	}
	if b.Less(a) && rng.IntN(4) > 0 {
		a, b = b, a
	}
	mapped := func(ip netip.Addr) string {
		if ip.Is4() && rng.IntN(6) == 0 {
			return netip.AddrFrom16(ip.As16()).String()
		}
		return ip.String()
	}
	switch rng.IntN(8) {
	case 0, 1, 2: // a CIDR, host bits and all
		bits := a.BitLen() - rng.IntN(6)
		if rng.IntN(6) == 0 && a.Is4() {
			return fmt.Sprintf("%s/%d", netip.AddrFrom16(a.As16()), bits+96)
		}
		return fmt.Sprintf("%s/%d", a, bits)
	case 3:
		return "not-an-address"
	case 4:
		return fmt.Sprintf(" %s - %s ", mapped(a), mapped(b))
	default: // a range, maybe backwards or of two families
		return mapped(a) + "-" + mapped(b)
	}
}

func describe(pools []v1beta1.IPAddressPool) string {
	var b strings.Builder
	for _, p := range pools {
		fmt.Fprintf(&b, "  %s created %s deleting=%v valid=%v %q\n", p.Name, p.CreationTimestamp.Format(time.TimeOnly),
			p.DeletionTimestamp != nil, valid(&p), p.Spec.Addresses)
	}
	return b.String()
}
