package allocator

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// fuzzPools are small and overlapping so that random operations collide often: "b" overlaps "a"
// (and, created later, gives out nothing there), "c" allows sharing across namespaces.
func fuzzPools(mask byte) []Pool {
	a := mkPool("a", 0, "10.0.0.0/29", "fd00::/126")
	b := mkPool("b", 1, "10.0.0.4-10.0.0.11")
	b.AvoidBuggyIPs = true
	c := mkPool("c", 2, "10.0.0.254-10.0.1.1")
	c.AvoidBuggyIPs, c.AllowCrossNamespaceSharing, c.AutoAssign = true, true, false
	var out []Pool
	for i, p := range []Pool{a, b, c} {
		if mask&(1<<i) != 0 {
			out = append(out, p)
		}
	}
	return out
}

var crossNamespaceRange = mustBlock("10.0.0.254-10.0.1.1")

// fuzzService builds a Service from three bytes of input.
func fuzzService(i, b1, b2 byte) Service {
	keys := []string{"n1/a", "n1/b", "n1/c", "n1/d", "n2/a", "n2/b", "n2/c", "n2/d"}
	s := svc(keys[int(i)%len(keys)])
	s.SharingKey = []string{"", "k", "k", "j"}[b1%4]
	s.Ports = [][]Port{{{"TCP", 80}}, {{"TCP", 443}}, {{"TCP", 80}, {"UDP", 53}}, {{"UDP", 53}}}[(b1/4)%4]
	s.BackendKey = []string{"", "app=x"}[(b1/16)%2]
	s.Pool = []string{"", "", "a", "b", "c", "zz"}[(b1/32)%6]
	switch b2 % 4 {
	case 1:
		s.Families, s.FamilyPolicy = []corev1.IPFamily{v6}, corev1.IPFamilyPolicySingleStack
	case 2:
		s.Families, s.FamilyPolicy = []corev1.IPFamily{v4, v6}, corev1.IPFamilyPolicyPreferDualStack
	case 3:
		s.Families, s.FamilyPolicy = []corev1.IPFamily{v6, v4}, corev1.IPFamilyPolicyRequireDualStack
	}
	if r := (b2 / 4) % 16; r < 8 {
		s.RequestedIPs = ips([]string{"10.0.0.1", "10.0.0.5", "10.0.0.255", "10.0.1.0", "fd00::2", "10.0.0.7", "10.0.0.9", "192.168.1.1"}[r])
	}
	return s
}

// FuzzAllocator drives random assign / release / restart / pool-change sequences and checks
// after every step that no address is held by two Services that did not ask to share it, that the
// allocator agrees with the Services' status, and that Assign is idempotent.
func FuzzAllocator(f *testing.F) {
	f.Add([]byte{0, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0})
	f.Add([]byte{0, 0, 1, 2, 0, 1, 1, 2, 4, 0, 0, 0, 0, 2, 1, 2, 5, 7, 0, 0, 0, 3, 1, 2})
	f.Add([]byte{0, 0, 4, 8, 0, 4, 4, 9, 6, 2, 0, 0, 4, 0, 0, 0, 0, 1, 164, 3})
	f.Fuzz(runFuzz)
}

// runFuzz plays one input: 4 bytes per operation.
func runFuzz(t *testing.T, data []byte) {
	mask := byte(3)
	a := New()
	a.SetPools(fuzzPools(mask))
	status := map[string]held{}
	for len(data) >= 4 {
		op, x, y, z := data[0]%8, data[1], data[2], data[3]
		data = data[4:]
		switch {
		case op <= 3: // the most common: (re)assign a Service, as a reconcile would
			s := fuzzService(x, y, z)
			s.Current = status[s.Key].ips
			res := a.Assign(s)
			again := a.Assign(func() Service { s.Current = res.IPs; return s }())
			if !slices.Equal(res.IPs, again.IPs) || res.Reason != again.Reason {
				t.Fatalf("Assign(%s) not idempotent: %v %s, then %v %s", s.Key, res.IPs, res.Reason, again.IPs, again.Reason)
			}
			if len(res.IPs) == 0 {
				delete(status, s.Key)
			} else {
				status[s.Key] = held{s, res.IPs}
			}
		case op == 4: // the Service is deleted
			k := fuzzService(x, y, z).Key
			a.Release(k)
			delete(status, k)
		case op == 5: // restart: a new allocator learns everything from status
			a = New()
			a.SetPools(fuzzPools(mask))
			keys := make([]string, 0, len(status))
			for k := range status {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				s := status[k].svc
				s.Current = status[k].ips
				a.Restore(s)
			}
		default: // pools added, removed, shrunk
			mask = x % 8
			a.SetPools(fuzzPools(mask))
		}
		checkInvariants(t, a, status)
	}
}

// held is one Service's status in the fuzz test: its last request and the addresses it got.
type held struct {
	svc Service
	ips []netip.Addr
}

func checkInvariants(t *testing.T, a *Allocator, status map[string]held) {
	t.Helper()
	holders := map[netip.Addr][]Service{}
	for k, h := range status {
		if rec := a.Holding(k); !slices.Equal(rec, h.ips) {
			t.Fatalf("%s: status %v, allocator %v", k, h.ips, rec)
		}
		for _, ip := range h.ips {
			holders[ip] = append(holders[ip], h.svc)
		}
	}
	for ip, hs := range holders {
		for i := range hs {
			for j := i + 1; j < len(hs); j++ {
				if err := mayShare(ip, hs[i], hs[j]); err != nil {
					t.Fatalf("%s held by %s and %s: %v", ip, hs[i].Key, hs[j].Key, err)
				}
			}
		}
		for _, p := range a.pools {
			if p.free.contains(ip) {
				t.Fatalf("%s is held but free in pool %s", ip, p.Name)
			}
		}
	}
}

func mayShare(ip netip.Addr, x, y Service) error {
	switch {
	case x.SharingKey == "" || x.SharingKey != y.SharingKey:
		return fmt.Errorf("sharing keys %q and %q", x.SharingKey, y.SharingKey)
	case x.BackendKey != y.BackendKey:
		return fmt.Errorf("backend keys %q and %q", x.BackendKey, y.BackendKey)
	case x.Namespace != y.Namespace && !crossNamespaceRange.Contains(ip):
		return fmt.Errorf("namespaces %s and %s", x.Namespace, y.Namespace)
	}
	if p, clash := overlap(x.Ports, y.Ports); clash {
		return fmt.Errorf("both use %v", p)
	}
	return nil
}
