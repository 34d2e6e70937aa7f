package allocator

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/heraldlb/herald/config"
	"github.com/heraldlb/herald/config/addresspool"
)

var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// pool builds an auto-assigning pool created `age` minutes after epoch.
func mkPool(name string, age int, addrs ...string) Pool {
	var blocks []addresspool.Block
	for _, s := range addrs {
		blocks = append(blocks, mustBlock(s))
	}
	return Pool{Pool: addresspool.Pool{Name: name, Created: epoch.Add(time.Duration(age) * time.Minute), Blocks: blocks}, AutoAssign: true}
}

func svc(key string, mods ...func(*Service)) Service {
	ns, _, _ := strings.Cut(key, "/")
	s := Service{Key: key, Namespace: ns, Ports: []Port{{corev1.ProtocolTCP, 80}}}
	for _, m := range mods {
		m(&s)
	}
	return s
}

func ips(s ...string) []netip.Addr {
	var out []netip.Addr
	for _, x := range s {
		out = append(out, netip.MustParseAddr(x))
	}
	return out
}

func shared(key string, ports ...int32) func(*Service) {
	return func(s *Service) {
		s.SharingKey = key
		s.Ports = nil
		for _, p := range ports {
			s.Ports = append(s.Ports, Port{corev1.ProtocolTCP, p})
		}
	}
}
func requested(a ...string) func(*Service) { return func(s *Service) { s.RequestedIPs = ips(a...) } }
func inPool(p string) func(*Service)       { return func(s *Service) { s.Pool = p } }
func status(a ...string) func(*Service)    { return func(s *Service) { s.Current = ips(a...) } }
func dual(policy corev1.IPFamilyPolicy, fams ...corev1.IPFamily) func(*Service) {
	return func(s *Service) { s.FamilyPolicy, s.Families = policy, fams }
}

const (
	v4 = corev1.IPv4Protocol
	v6 = corev1.IPv6Protocol
)

type step struct {
	assign  *Service // nil: release `release`
	release string
	want    []string // addresses expected (nil for none)
	reason  string
	msg     string // substring of the message, if set
}

func assign(s Service, reason string, want ...string) step {
	return step{assign: &s, want: want, reason: reason}
}
func release(key string) step { return step{release: key} }
func (s step) saying(m string) step {
	s.msg = m
	return s
}

func TestAssign(t *testing.T) {
	nsSel, _ := labels.Parse("team=blue")
	svcSel, _ := labels.Parse("tier=edge")
	for _, tc := range []struct {
		name  string
		pools []Pool
		steps []step
	}{
		{"lowest free address, then the next", []Pool{mkPool("p", 0, "10.0.0.0/30")}, []step{
			assign(svc("a/x"), config.ReasonAllocated, "10.0.0.0").saying("10.0.0.0 from pool p"),
			assign(svc("a/y"), config.ReasonAllocated, "10.0.0.1"),
			assign(svc("a/x"), config.ReasonAllocated, "10.0.0.0"), // idempotent
		}},
		{"exhausted pool, then a release makes room", []Pool{mkPool("p", 0, "10.0.0.1-10.0.0.2")}, []step{
			assign(svc("a/x"), config.ReasonAllocated, "10.0.0.1"),
			assign(svc("a/y"), config.ReasonAllocated, "10.0.0.2"),
			assign(svc("a/z"), config.ReasonPoolExhausted).saying("IPAddressPool p has no free IPv4"),
			release("a/x"),
			assign(svc("a/z"), config.ReasonAllocated, "10.0.0.1"),
		}},
		{"avoidBuggyIPs skips .0 and .255", []Pool{func() Pool {
			p := mkPool("p", 0, "10.0.0.255-10.0.1.1")
			p.AvoidBuggyIPs = true
			return p
		}()}, []step{
			assign(svc("a/x"), config.ReasonAllocated, "10.0.1.1"),
			assign(svc("a/y"), config.ReasonPoolExhausted),
			assign(svc("a/z", requested("10.0.1.0")), config.ReasonRequestedIPUnavailable).saying("avoidBuggyIPs"),
		}},
		{"requested address, taken and outside pools", []Pool{mkPool("p", 0, "10.0.0.0/29")}, []step{
			assign(svc("a/x", requested("10.0.0.5")), config.ReasonAllocated, "10.0.0.5"),
			assign(svc("a/y", requested("10.0.0.5")), config.ReasonRequestedIPUnavailable).saying("in use by Service a/x"),
			assign(svc("a/z", requested("192.168.0.1")), config.ReasonRequestedIPOutside),
			assign(svc("a/w"), config.ReasonAllocated, "10.0.0.0"),
		}},
		{"requested address changes move the Service", []Pool{mkPool("p", 0, "10.0.0.0/29")}, []step{
			assign(svc("a/x", requested("10.0.0.5")), config.ReasonAllocated, "10.0.0.5"),
			assign(svc("a/x", requested("10.0.0.6")), config.ReasonAllocated, "10.0.0.6"),
			assign(svc("a/y", requested("10.0.0.5")), config.ReasonAllocated, "10.0.0.5"),
		}},
		{"pool annotation: named, unknown, not serving", []Pool{mkPool("a", 0, "10.0.0.0/30"), func() Pool {
			p := mkPool("b", 1, "10.1.0.0/30")
			p.AutoAssign = false
			return p
		}(), func() Pool {
			p := mkPool("c", 2, "10.2.0.0/30")
			p.Namespaces = []string{"other"}
			return p
		}()}, []step{
			assign(svc("n/x", inPool("b")), config.ReasonAllocated, "10.1.0.0"),
			assign(svc("n/y", inPool("nope")), config.ReasonNoPool).saying(`"nope" does not exist`),
			assign(svc("n/z", inPool("c")), config.ReasonNoPool).saying("does not serve"),
			assign(svc("n/w"), config.ReasonAllocated, "10.0.0.0"), // b is not autoAssign, c does not serve n
			assign(svc("n/v", requested("10.1.0.3"), inPool("a")), config.ReasonRequestedIPOutside).saying(`belongs to "b"`),
			assign(svc("n/x", inPool("a")), config.ReasonAllocated, "10.0.0.1"), // annotation changed: moves
		}},
		{"priority, selectors", []Pool{
			mkPool("late-default", 0, "10.9.0.0/30"),
			func() Pool { p := mkPool("prio2", 1, "10.2.0.0/30"); p.Priority = 2; return p }(),
			func() Pool {
				p := mkPool("prio1", 2, "10.1.0.0/30")
				p.Priority = 1
				p.NamespaceSelectors = []labels.Selector{nsSel}
				return p
			}(),
			func() Pool {
				p := mkPool("edge", 3, "10.3.0.0/30")
				p.Priority = 1
				p.ServiceSelectors = []labels.Selector{svcSel}
				return p
			}(),
		}, []step{
			assign(svc("red/x"), config.ReasonAllocated, "10.2.0.0"),
			assign(svc("blue/x", func(s *Service) { s.NamespaceLabels = labels.Set{"team": "blue"} }), config.ReasonAllocated, "10.1.0.0"),
			assign(svc("red/y", func(s *Service) { s.Labels = labels.Set{"tier": "edge"} }), config.ReasonAllocated, "10.3.0.0"),
		}},
		{"no pool at all", nil, []step{
			assign(svc("a/x"), config.ReasonNoPool).saying("no IPAddressPool with autoAssign"),
		}},
		{"sharing: same key, disjoint ports", []Pool{mkPool("p", 0, "10.0.0.0/29")}, []step{
			assign(svc("a/x", shared("k", 80)), config.ReasonAllocated, "10.0.0.0"),
			assign(svc("a/y", shared("k", 443)), config.ReasonAllocated, "10.0.0.0"),
			assign(svc("a/z", shared("k", 80)), config.ReasonAllocated, "10.0.0.1"),     // port clash: another address
			assign(svc("a/w", shared("other", 22)), config.ReasonAllocated, "10.0.0.2"), // other key: own address
			assign(svc("b/x", shared("k", 8080)), config.ReasonAllocated, "10.0.0.3"),   // other namespace
			assign(svc("a/v", shared("k", 443), requested("10.0.0.0")), config.ReasonSharingConflict).saying("already uses TCP/443"),
			assign(svc("a/u", requested("10.0.0.0")), config.ReasonRequestedIPUnavailable).saying("same herald.io/allow-shared-ip key"),
			assign(svc("b/y", shared("k", 9), requested("10.0.0.0")), config.ReasonSharingConflict).saying("another namespace"),
			release("a/x"),
			assign(svc("a/t"), config.ReasonAllocated, "10.0.0.4"), // 10.0.0.0 is still held by a/y
			release("a/y"),
			assign(svc("a/s"), config.ReasonAllocated, "10.0.0.0"),
		}},
		{"sharing across namespaces when the pool allows it", []Pool{func() Pool {
			p := mkPool("p", 0, "10.0.0.0/29")
			p.AllowCrossNamespaceSharing = true
			return p
		}()}, []step{
			assign(svc("a/x", shared("k", 80)), config.ReasonAllocated, "10.0.0.0"),
			assign(svc("b/x", shared("k", 443)), config.ReasonAllocated, "10.0.0.0"),
		}},
		{"sharing with externalTrafficPolicy Local needs the same selector", []Pool{mkPool("p", 0, "10.0.0.0/29")}, []step{
			assign(svc("a/x", shared("k", 80), func(s *Service) { s.BackendKey = "app=a" }), config.ReasonAllocated, "10.0.0.0"),
			assign(svc("a/y", shared("k", 81), func(s *Service) { s.BackendKey = "app=b" }), config.ReasonAllocated, "10.0.0.1"),
			assign(svc("a/z", shared("k", 82), func(s *Service) { s.BackendKey = "app=a" }), config.ReasonAllocated, "10.0.0.0"),
			assign(svc("a/w", shared("k", 83), requested("10.0.0.0")), config.ReasonSharingConflict).saying("externalTrafficPolicy Local"),
		}},
		{"a port change that clashes moves the Service", []Pool{mkPool("p", 0, "10.0.0.0/29")}, []step{
			assign(svc("a/x", shared("k", 80)), config.ReasonAllocated, "10.0.0.0"),
			assign(svc("a/y", shared("k", 443)), config.ReasonAllocated, "10.0.0.0"),
			assign(svc("a/y", shared("k", 80)), config.ReasonAllocated, "10.0.0.1"),
		}},
		{"dual-stack policies", []Pool{mkPool("d", 0, "10.0.0.0/30", "fd00::/126"), func() Pool {
			p := mkPool("v6only", 1, "fd01::/126")
			p.AutoAssign = false
			return p
		}()}, []step{
			assign(svc("a/x", dual(corev1.IPFamilyPolicyRequireDualStack, v6, v4)), config.ReasonAllocated, "fd00::", "10.0.0.0"),
			assign(svc("a/y", dual(corev1.IPFamilyPolicyPreferDualStack, v4, v6)), config.ReasonAllocated, "10.0.0.1", "fd00::1"),
			assign(svc("a/z", dual(corev1.IPFamilyPolicySingleStack, v6)), config.ReasonAllocated, "fd00::2"),
			assign(svc("a/w", dual(corev1.IPFamilyPolicyRequireDualStack, v4, v6), inPool("v6only")), config.ReasonFamilyUnavailable).saying("RequireDualStack"),
			assign(svc("a/v", dual(corev1.IPFamilyPolicyPreferDualStack, v4, v6), inPool("v6only")), config.ReasonAllocated, "fd01::"),
			assign(svc("a/u", dual(corev1.IPFamilyPolicySingleStack, v4), inPool("v6only")), config.ReasonFamilyUnavailable),
			assign(svc("a/t", dual(corev1.IPFamilyPolicySingleStack, v4), requested("fd00::3")), config.ReasonInvalidRequest).saying("allow only IPv4"),
			assign(svc("a/s", dual(corev1.IPFamilyPolicyRequireDualStack, v4, v6), requested("10.0.0.3")), config.ReasonInvalidRequest),
			assign(svc("a/r", dual(corev1.IPFamilyPolicyRequireDualStack, v4, v6), requested("fd00::3", "10.0.0.3")), config.ReasonAllocated, "10.0.0.3", "fd00::3"),
			assign(svc("a/q", dual(corev1.IPFamilyPolicyRequireDualStack, v4)), config.ReasonInvalidRequest),
		}},
		{"overlapping pools: the later one gives out nothing in the overlap", []Pool{
			mkPool("late", 5, "10.0.0.0/30"), mkPool("early", 0, "10.0.0.2-10.0.0.5"),
		}, []step{
			assign(svc("a/x", inPool("late")), config.ReasonAllocated, "10.0.0.0"),
			assign(svc("a/y", inPool("late")), config.ReasonAllocated, "10.0.0.1"),
			assign(svc("a/z", inPool("late")), config.ReasonPoolExhausted),
			assign(svc("a/w", requested("10.0.0.3")), config.ReasonAllocated, "10.0.0.3").saying("pool early"),
		}},
		{"status is kept when it fits, replaced when it does not", []Pool{mkPool("p", 0, "10.0.0.0/29")}, []step{
			assign(svc("a/x", status("10.0.0.6")), config.ReasonAllocated, "10.0.0.6"),
			assign(svc("a/y", status("10.0.0.6")), config.ReasonAllocated, "10.0.0.0"), // taken: not two holders
			assign(svc("a/z", status("fd00::1")), config.ReasonAllocated, "10.0.0.1"),  // wrong family
		}},
		{"status outside every pool is kept with PoolRemoved", []Pool{mkPool("p", 0, "10.0.0.0/29")}, []step{
			assign(svc("a/x", status("10.9.9.9")), config.ReasonPoolRemoved, "10.9.9.9").saying("no IPAddressPool holds"),
			assign(svc("a/y", requested("10.9.9.9")), config.ReasonRequestedIPOutside),
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := New()
			a.SetPools(tc.pools)
			for i, st := range tc.steps {
				if st.assign == nil {
					a.Release(st.release)
					continue
				}
				res := a.Assign(*st.assign)
				if got := res.IPs; !slices.Equal(got, ips(st.want...)) || res.Reason != st.reason || !strings.Contains(res.Message, st.msg) {
					t.Fatalf("step %d (%s): got %v %s %q, want %v %s %q", i, st.assign.Key, got, res.Reason, res.Message, st.want, st.reason, st.msg)
				}
				if again := a.Assign(*st.assign); !slices.Equal(again.IPs, res.IPs) || again.Reason != res.Reason {
					t.Fatalf("step %d (%s): not idempotent: %v %s then %v %s", i, st.assign.Key, res.IPs, res.Reason, again.IPs, again.Reason)
				}
			}
		})
	}
}

func TestPoolShrinksAndGrows(t *testing.T) {
	a := New()
	a.SetPools([]Pool{mkPool("p", 0, "10.0.0.0/30")})
	for _, k := range []string{"a/0", "a/1", "a/2", "a/3"} {
		if r := a.Assign(svc(k)); r.Reason != config.ReasonAllocated {
			t.Fatalf("%s: %v", k, r)
		}
	}
	a.SetPools([]Pool{mkPool("p", 0, "10.0.0.0/31")})
	if r := a.Assign(svc("a/3")); r.Reason != config.ReasonPoolRemoved || !slices.Equal(r.IPs, ips("10.0.0.3")) {
		t.Fatalf("shrunk: %v", r)
	}
	if n := a.HeldOutsidePools([]addresspool.Block{mustBlock("10.0.0.0/30")}); n != 2 {
		t.Fatalf("HeldOutsidePools = %d, want 2", n)
	}
	rep, _ := a.Report("p")
	if u := rep.Usage[v4]; u.Total.Int64() != 2 || u.InUse != 2 || u.Free.Int64() != 0 {
		t.Fatalf("usage after shrink: %+v", u)
	}
	// Growing back: the held addresses stay taken, nothing is given twice.
	a.SetPools([]Pool{mkPool("p", 0, "10.0.0.0/29")})
	if r := a.Assign(svc("a/4")); !slices.Equal(r.IPs, ips("10.0.0.4")) {
		t.Fatalf("after growing: %v", r)
	}
	if r := a.Assign(svc("a/3")); r.Reason != config.ReasonAllocated {
		t.Fatalf("back in the pool: %v", r)
	}
	a.SetPools(nil)
	if r := a.Assign(svc("a/0")); r.Reason != config.ReasonPoolRemoved {
		t.Fatalf("pool deleted: %v", r)
	}
	if r := a.Assign(svc("a/9")); r.Reason != config.ReasonNoPool {
		t.Fatalf("no pool: %v", r)
	}
}

func TestRestoreKeepsEveryAddress(t *testing.T) {
	pools := []Pool{mkPool("p", 0, "10.0.0.0/29", "fd00::/125")}
	a := New()
	a.SetPools(pools)
	statuses := map[string][]netip.Addr{}
	for i := range 6 {
		s := svc("a/"+string(rune('a'+i)), dual(corev1.IPFamilyPolicyPreferDualStack, v4, v6))
		statuses[s.Key] = a.Assign(s).IPs
	}
	a.Release("a/b")
	delete(statuses, "a/b")

	b := New()
	b.SetPools(pools)
	for k, cur := range statuses {
		b.Restore(svc(k, status(toStrings(cur)...)))
	}
	// A new Service must not get any restored address, and every old one keeps its own.
	n := b.Assign(svc("a/new", dual(corev1.IPFamilyPolicyPreferDualStack, v4, v6)))
	if !slices.Equal(n.IPs, ips("10.0.0.1", "fd00::1")) {
		t.Fatalf("new Service got %v, want the freed 10.0.0.1, fd00::1", n.IPs)
	}
	for k, cur := range statuses {
		r := b.Assign(svc(k, dual(corev1.IPFamilyPolicyPreferDualStack, v4, v6), status(toStrings(cur)...)))
		if !slices.Equal(r.IPs, cur) {
			t.Errorf("%s moved from %v to %v", k, cur, r.IPs)
		}
	}
	rep, _ := b.Report("p")
	if rep.Usage[v4].InUse != 6 || rep.Usage[v6].InUse != 6 || rep.Usage[v6].Free.Int64() != 2 {
		t.Errorf("usage: %+v", rep.Usage)
	}
}

func TestOverlapReport(t *testing.T) {
	a := New()
	a.SetPools([]Pool{mkPool("b", 1, "10.0.0.0/24", "fd00::/64"), mkPool("a", 0, "10.0.0.128/25"), mkPool("c", 2, "10.0.1.0/24")})
	rep, _ := a.Report("b")
	if !slices.Equal(rep.Overlaps, []string{"a"}) || rep.Usage[v4].Total.Int64() != 128 ||
		rep.Usage[v6].Total.String() != "18446744073709551616" {
		t.Fatalf("b: %+v", rep)
	}
	if rep, _ := a.Report("c"); len(rep.Overlaps) != 0 {
		t.Fatalf("c overlaps %v", rep.Overlaps)
	}
	if _, ok := a.Report("zzz"); ok {
		t.Fatal("unknown pool reported")
	}
	// The owner of an address is the older pool where two overlap.
	for ip, want := range map[string]string{"10.0.0.200": "a", "10.0.0.5": "b", "fd00::9": "b", "10.0.1.1": "c", "10.0.2.1": ""} {
		s := svc("x/"+ip, requested(ip))
		if netip.MustParseAddr(ip).Is6() {
			dual(corev1.IPFamilyPolicySingleStack, v6)(&s)
		}
		res := a.Assign(s)
		if res.Pool != want || (want == "") != (res.Reason == config.ReasonRequestedIPOutside) {
			t.Errorf("requesting %s: pool %q (%s), want %q", ip, res.Pool, res.Reason, want)
		}
		a.Release(s.Key)
	}
}

// TestPoolsNotLiveGiveOutNothing: a pool being deleted or invalid is passed to SetPools like the
// others, but gives out nothing; a Service holding one of its addresses keeps it (PoolRemoved).
func TestPoolsNotLiveGiveOutNothing(t *testing.T) {
	a := New()
	a.SetPools([]Pool{mkPool("p", 0, "10.0.0.0/31"), mkPool("q", 1, "10.0.1.0/31")})
	if r := a.Assign(svc("a/x", inPool("q"))); !slices.Equal(r.IPs, ips("10.0.1.0")) {
		t.Fatalf("from q: %v", r)
	}
	deleting := mkPool("q", 1, "10.0.1.0/31")
	deleting.Deleting = true
	invalid := mkPool("r", 2, "10.0.2.0/31")
	invalid.Err = errors.New("spec.addresses[1]: bad")
	a.SetPools([]Pool{mkPool("p", 0, "10.0.0.0/31"), deleting, invalid})
	if r := a.Assign(svc("a/x", inPool("q"))); r.Reason != config.ReasonPoolRemoved || !slices.Equal(r.IPs, ips("10.0.1.0")) {
		t.Fatalf("held from a deleting pool: %v", r)
	}
	for _, name := range []string{"q", "r"} {
		if r := a.Assign(svc("a/y", inPool(name))); r.Reason != config.ReasonNoPool {
			t.Errorf("named pool %s that is not live: %v", name, r)
		}
		if _, ok := a.Report(name); ok {
			t.Errorf("pool %s that is not live has a report", name)
		}
	}
	for _, ip := range []string{"10.0.1.1", "10.0.2.0"} {
		if r := a.Assign(svc("a/z", requested(ip))); r.Reason != config.ReasonRequestedIPOutside {
			t.Errorf("requesting %s of a pool that is not live: %v", ip, r)
		}
	}
	if r := a.Assign(svc("a/w")); !slices.Equal(r.IPs, ips("10.0.0.0")) {
		t.Errorf("from the live pool: %v", r)
	}
}

func mustBlock(s string) addresspool.Block {
	b, err := addresspool.ParseBlock(s)
	if err != nil {
		panic(err)
	}
	return b
}

func toStrings(a []netip.Addr) []string {
	out := make([]string, len(a))
	for i, ip := range a {
		out[i] = ip.String()
	}
	return out
}

// TestWaitingAndReserve: a refused Service waits until it is assigned or released; a reservation
// replaces what a Service held in one step and says whether an address became free.
func TestWaitingAndReserve(t *testing.T) {
	a := New()
	a.SetPools([]Pool{mkPool("p", 0, "10.0.0.1/32")})
	if r := a.Assign(svc("a/one")); !slices.Equal(r.IPs, ips("10.0.0.1")) {
		t.Fatalf("a/one: %v", r)
	}
	if r := a.Assign(svc("a/two")); r.Reason != config.ReasonPoolExhausted {
		t.Fatalf("a/two: %v, want PoolExhausted", r)
	}
	if w := a.Waiting(); !slices.Equal(w, []string{"a/two"}) {
		t.Fatalf("waiting %v, want [a/two]", w)
	}
	if !a.Release("a/one") {
		t.Fatal("releasing a/one freed nothing")
	}
	if r := a.Assign(svc("a/two")); !slices.Equal(r.IPs, ips("10.0.0.1")) || len(a.Waiting()) != 0 {
		t.Fatalf("a/two after the release: %v, waiting %v", r, a.Waiting())
	}
	a.Assign(svc("a/three"))
	a.Release("a/three")
	if w := a.Waiting(); len(w) != 0 {
		t.Fatalf("a released Service still waits: %v", w)
	}

	// A Service of another class moves from 10.0.0.9 to 10.0.0.8 (both outside the pools).
	if a.Reserve(svc("b/other", status("10.0.0.9"))) {
		t.Error("a first reservation freed an address")
	}
	if a.Reserve(svc("b/other", status("10.0.0.9"))) {
		t.Error("the same reservation again freed an address")
	}
	if !a.Reserve(svc("b/other", status("10.0.0.8"))) {
		t.Error("moving the reservation freed nothing")
	}
	if h := a.Holding("b/other"); !slices.Equal(h, ips("10.0.0.8")) {
		t.Errorf("b/other holds %v, want 10.0.0.8", h)
	}
}
