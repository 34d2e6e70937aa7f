// Package allocator gives LoadBalancer Services addresses from IPAddressPools. It is pure (no
// Kubernetes client) and idempotent: the Services' status is the only truth, so after a restart the
// caller restores every Service's current addresses (Restore) before assigning new ones (Assign), and
// assigning the same Service twice gives the same answer. Free addresses live in interval sets
// (freeSet), so an allocation costs O(log n) whatever the fill and a /64 costs memory only for the
// addresses in use.
package allocator

import (
	"fmt"
	"maps"
	"math/big"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/google/btree"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/heraldlb/herald/config"
	"github.com/heraldlb/herald/config/addresspool"
)

// Pool is an IPAddressPool as the allocator sees it: the parsed pool (name, age, blocks, selectors;
// which addresses it owns is addresspool.Set's rule, so a pool that is not Live gives out nothing)
// and what decides which Services it serves.
type Pool struct {
	addresspool.Pool
	AutoAssign    bool
	AvoidBuggyIPs bool
	// Priority: lower numbers are tried first; 0 means unset and comes after every set priority.
	Priority int
	// Namespaces and NamespaceSelectors restrict the pool to Services of matching namespaces (either
	// matches); ServiceSelectors to Services with matching labels. Empty means no restriction.
	Namespaces                 []string
	AllowCrossNamespaceSharing bool
}

// Port is one protocol/port of a Service; Services sharing an address must not overlap on these.
type Port struct {
	Protocol corev1.Protocol
	Port     int32
}

// Service is what the allocator needs to know about one LoadBalancer Service.
type Service struct {
	Key             string // namespace/name
	Namespace       string
	Labels          labels.Set
	NamespaceLabels labels.Set
	Pool            string       // requested pool (herald.io/address-pool), "" for any
	RequestedIPs    []netip.Addr // herald.io/loadBalancerIPs or spec.loadBalancerIP
	SharingKey      string       // herald.io/allow-shared-ip
	Ports           []Port
	// BackendKey is the canonical selector of a Service with externalTrafficPolicy Local and "" otherwise:
	// Services sharing an address must agree on it, or traffic would reach nodes without endpoints.
	BackendKey   string
	Families     []corev1.IPFamily // spec.ipFamilies; empty means [IPv4]
	FamilyPolicy corev1.IPFamilyPolicy
	Current      []netip.Addr // status.loadBalancer.ingress, the truth after a restart
}

// Result of Assign. IPs is empty on refusal; reason PoolRemoved keeps addresses no pool holds any more.
type Result struct {
	IPs     []netip.Addr // one per family, in spec.ipFamilies order
	Pool    string       // the pool(s) the addresses come from, comma-separated
	Reason  string       // one of config.Reason*
	Message string
	// Freed reports that this call gave addresses back, so Services waiting for room may now fit.
	Freed bool
}

// Usage is one family's address counts in a pool. Totals are big: an IPv6 /64 does not fit an int64.
type Usage struct {
	Total *big.Int
	InUse int64
	Free  *big.Int
}

// PoolReport is what the allocator knows about one pool, for its status.
type PoolReport struct {
	Overlaps []string // earlier pools whose addresses this one shares (and so does not give out)
	Usage    map[corev1.IPFamily]Usage
}

// pool is a live pool; its embedded addresspool.Pool is the Set's, so Effective is what it gives out.
type pool struct {
	Pool
	free  *freeSet
	inUse map[corev1.IPFamily]int64
}

// holding is what one Service holds, with the request it was made for (ports, sharing key, …).
type holding struct {
	svc Service
	ips []netip.Addr
}

// ipUse is one address in use: by one Service, or by several sharing it under one sharing key.
type ipUse struct {
	holders map[string]*holding
}

// Allocator assigns addresses. It is safe for concurrent use, and its lock is the only one its
// state needs: every step a caller must see whole (a refusal and the record that the Service waits,
// a reservation replacing what a Service held) is one method.
type Allocator struct {
	mu       sync.Mutex
	set      *addresspool.Set
	pools    map[string]*pool // the live pools of set
	ips      map[netip.Addr]*ipUse
	used     *btree.BTreeG[netip.Addr] // the keys of ips, ordered, to walk one range's addresses
	services map[string]*holding
	sharing  map[string]map[netip.Addr]struct{} // sharing key -> addresses held under it
	// waiting are the Services whose last Assign gave them no address (see Waiting).
	waiting map[string]struct{}
}

// New returns an allocator without pools.
func New() *Allocator {
	return &Allocator{
		set:      addresspool.NewSet(nil),
		pools:    map[string]*pool{},
		ips:      map[netip.Addr]*ipUse{},
		used:     btree.NewG(16, netip.Addr.Less),
		services: map[string]*holding{},
		sharing:  map[string]map[netip.Addr]struct{}{},
		waiting:  map[string]struct{}{},
	}
}

// SetPools replaces the pool set. Only live pools give out addresses (addresspool.Set says which
// owns each); addresses in use stay in use whether or not a pool still holds them.
func (a *Allocator) SetPools(pools []Pool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	parsed := make([]addresspool.Pool, len(pools))
	for i, p := range pools {
		parsed[i] = p.Pool
	}
	a.set = addresspool.NewSet(parsed)
	a.pools = make(map[string]*pool, len(pools))
	for _, spec := range pools {
		laid := a.set.Pool(spec.Name)
		if !laid.Live() {
			continue
		}
		spec.Pool = *laid
		p := &pool{Pool: spec, free: newFreeSet(), inUse: map[corev1.IPFamily]int64{}}
		a.pools[spec.Name] = p
		for _, b := range p.Effective() {
			a.fillFree(p, b)
		}
	}
}

// fillFree adds the free parts of r to p's free set and counts the used ones.
func (a *Allocator) fillFree(p *pool, r addresspool.Block) {
	next := r.First
	done := false
	a.used.AscendGreaterOrEqual(r.First, func(ip netip.Addr) bool {
		if r.Last.Less(ip) {
			return false
		}
		p.inUse[addresspool.FamilyOf(ip)]++
		if next.Less(ip) {
			p.free.add(addresspool.Block{First: next, Last: ip.Prev()})
		}
		if ip == r.Last {
			done = true
			return false
		}
		next = ip.Next()
		return true
	})
	if !done {
		p.free.add(addresspool.Block{First: next, Last: r.Last})
	}
}

// owner is the live pool that gives out ip, or nil.
func (a *Allocator) owner(ip netip.Addr) *pool {
	if o := a.set.Owner(ip); o != nil {
		return a.pools[o.Name] // nil for a pool that is not live
	}
	return nil
}

// Report returns a pool's overlaps and per-family usage; false when the pool is unknown.
func (a *Allocator) Report(name string) (PoolReport, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	p, ok := a.pools[name]
	if !ok {
		return PoolReport{}, false
	}
	rep := PoolReport{Overlaps: slices.Clone(p.Overlaps()), Usage: map[corev1.IPFamily]Usage{}}
	for _, fam := range []corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv6Protocol} {
		total := new(big.Int)
		has := false
		for _, r := range p.Effective() {
			if r.Family() != fam {
				continue
			}
			has = true
			total.Add(total, r.Size())
			if p.AvoidBuggyIPs {
				total.Sub(total, big.NewInt(buggyCount(r)))
			}
		}
		if !has {
			continue
		}
		free := new(big.Int).Sub(total, big.NewInt(p.inUse[fam]))
		if free.Sign() < 0 { // restored .0/.255 addresses in a pool that avoids them
			free.SetInt64(0)
		}
		rep.Usage[fam] = Usage{Total: total, InUse: p.inUse[fam], Free: free}
	}
	return rep, true
}

// HeldOutsidePools counts addresses in the given ranges that Services hold although no pool gives
// them out any more: while it is not zero, a deleted pool that had these ranges must stay.
func (a *Allocator) HeldOutsidePools(ranges []addresspool.Block) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for _, r := range ranges {
		a.used.AscendGreaterOrEqual(r.First, func(ip netip.Addr) bool {
			if r.Last.Less(ip) {
				return false
			}
			if a.owner(ip) == nil {
				n++
			}
			return true
		})
	}
	return n
}

// Holding returns the addresses the allocator has recorded for a Service.
func (a *Allocator) Holding(key string) []netip.Addr {
	a.mu.Lock()
	defer a.mu.Unlock()
	if h, ok := a.services[key]; ok {
		return slices.Clone(h.ips)
	}
	return nil
}

// Restore records a Service's current addresses (its status) without checking its spec: called for
// every Service before the first Assign after a start, so no address can go to a second Service.
// An address already restored for an unrelated Service is skipped; Assign later moves that Service.
func (a *Allocator) Restore(s Service) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.restore(s)
}

func (a *Allocator) restore(s Service) {
	if _, ok := a.services[s.Key]; ok {
		return
	}
	var ips []netip.Addr
	for _, ip := range normalise(s.Current) {
		if _, msg := a.conflict(ip, s); msg == "" {
			ips = append(ips, ip)
		}
	}
	if len(ips) > 0 {
		a.claim(s, ips)
	}
}

// Reserve records the addresses in the status of a Service that is not this allocator's to serve
// (another class, another configuration gave them), replacing what it held, so they never go to a
// second Service; true if an address it held before became free.
func (a *Allocator) Reserve(s Service) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.waiting, s.Key)
	if h, ok := a.services[s.Key]; ok && slices.Equal(h.ips, normalise(s.Current)) {
		return false
	}
	freed := a.release(s.Key)
	a.restore(s)
	return freed
}

// Assign gives the Service its addresses: the ones it has if they still fit its spec, else new ones.
// On refusal the Service holds nothing afterwards, and waits (Waiting) until it is assigned or
// released.
func (a *Allocator) Assign(s Service) Result {
	a.mu.Lock()
	defer a.mu.Unlock()
	res := a.assign(s)
	if len(res.IPs) == 0 {
		a.waiting[s.Key] = struct{}{}
	} else {
		delete(a.waiting, s.Key)
	}
	return res
}

// Waiting returns the Services refused by their last Assign: when an address becomes free (a
// Result or Release says Freed), these are the ones to assign again. A refusal and this record are
// one step, so a Service refused while another released is never missed.
func (a *Allocator) Waiting() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Collect(maps.Keys(a.waiting))
}

func (a *Allocator) assign(s Service) Result {
	fams, err := wantedFamilies(s)
	if err != nil {
		return a.refuse(s.Key, config.ReasonInvalidRequest, err.Error())
	}
	if res, ok := a.keep(s, fams); ok {
		return res
	}
	freed := a.release(s.Key)
	var res Result
	if len(s.RequestedIPs) > 0 {
		res = a.assignRequested(s, fams)
	} else {
		res = a.assignFromPools(s, fams)
	}
	res.Freed = res.Freed || freed
	return res
}

// Release gives back everything a Service holds; true if an address became free.
func (a *Allocator) Release(key string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.waiting, key)
	return a.release(key)
}

func (a *Allocator) release(key string) bool {
	h, ok := a.services[key]
	if !ok {
		return false
	}
	delete(a.services, key)
	freed := false
	for _, ip := range h.ips {
		u := a.ips[ip]
		delete(u.holders, key)
		if len(u.holders) > 0 {
			continue
		}
		freed = true
		delete(a.ips, ip)
		a.used.Delete(ip)
		if k := h.svc.SharingKey; k != "" {
			delete(a.sharing[k], ip)
			if len(a.sharing[k]) == 0 {
				delete(a.sharing, k)
			}
		}
		if p := a.owner(ip); p != nil {
			p.free.put(ip)
			p.inUse[addresspool.FamilyOf(ip)]--
		}
	}
	return freed
}

func (a *Allocator) refuse(key string, reason, msg string) Result {
	return Result{Reason: reason, Message: msg, Freed: a.release(key)}
}

// keep decides whether the Service's addresses (recorded, or from its status) still fit its spec and
// its co-holders; if so it (re)records them and answers.
func (a *Allocator) keep(s Service, fams []corev1.IPFamily) (Result, bool) {
	h := a.services[s.Key]
	current := normalise(s.Current)
	if h != nil {
		current = h.ips
	}
	if len(current) == 0 {
		return Result{}, false
	}
	seen := map[corev1.IPFamily]bool{}
	for _, ip := range current {
		f := addresspool.FamilyOf(ip)
		if !slices.Contains(fams, f) || seen[f] {
			return Result{}, false
		}
		seen[f] = true
	}
	if s.FamilyPolicy == corev1.IPFamilyPolicyRequireDualStack && len(current) != len(fams) {
		return Result{}, false
	}
	if len(s.RequestedIPs) > 0 && !sameSet(current, normalise(s.RequestedIPs)) {
		return Result{}, false
	}
	for _, ip := range current {
		if p := a.owner(ip); p != nil && s.Pool != "" && p.Name != s.Pool {
			return Result{}, false
		}
		if _, msg := a.conflict(ip, s); msg != "" {
			return Result{}, false
		}
	}
	a.release(s.Key) // re-record under the current request (ports or sharing key may have changed)
	ips := orderByFamily(current, fams)
	a.claim(s, ips)
	return a.answer(ips), true
}

// answer describes addresses a Service holds: Allocated, or PoolRemoved when no pool holds one any more.
func (a *Allocator) answer(ips []netip.Addr) Result {
	var pools, orphans []string
	for _, ip := range ips {
		if p := a.owner(ip); p != nil {
			if !slices.Contains(pools, p.Name) {
				pools = append(pools, p.Name)
			}
		} else {
			orphans = append(orphans, ip.String())
		}
	}
	res := Result{IPs: ips, Pool: strings.Join(pools, ",")}
	if len(orphans) > 0 {
		res.Reason = config.ReasonPoolRemoved
		res.Message = fmt.Sprintf("%s: no IPAddressPool holds this any more (pool deleted or shrunk); "+
			"the Service keeps it until it is deleted or asks for another address", strings.Join(orphans, ", "))
		return res
	}
	res.Reason = config.ReasonAllocated
	res.Message = fmt.Sprintf("%s from pool %s", joinIPs(ips), res.Pool)
	return res
}

func (a *Allocator) assignRequested(s Service, fams []corev1.IPFamily) Result {
	if s.Pool != "" && a.pools[s.Pool] == nil {
		return Result{Reason: config.ReasonNoPool, Message: fmt.Sprintf("IPAddressPool %q does not exist", s.Pool)}
	}
	ips := normalise(s.RequestedIPs)
	seen := map[corev1.IPFamily]bool{}
	for _, ip := range ips {
		f := addresspool.FamilyOf(ip)
		if !slices.Contains(fams, f) {
			return Result{Reason: config.ReasonInvalidRequest, Message: fmt.Sprintf(
				"requested %s is %s but the Service's ipFamilies (with ipFamilyPolicy %s) allow only %s",
				ip, f, policyName(s.FamilyPolicy), familyList(fams))}
		}
		if seen[f] {
			return Result{Reason: config.ReasonInvalidRequest, Message: fmt.Sprintf(
				"requested addresses %s name two %s addresses; give at most one per family", joinIPs(ips), f)}
		}
		seen[f] = true
	}
	if s.FamilyPolicy == corev1.IPFamilyPolicyRequireDualStack && len(ips) != len(fams) {
		return Result{Reason: config.ReasonInvalidRequest, Message: fmt.Sprintf(
			"ipFamilyPolicy RequireDualStack needs one requested address per family, got %s", joinIPs(ips))}
	}
	for _, ip := range ips {
		p := a.owner(ip)
		switch {
		case p == nil:
			return Result{Reason: config.ReasonRequestedIPOutside, Message: fmt.Sprintf(
				"requested %s is not in any IPAddressPool; add it to a pool or request another address", ip)}
		case s.Pool != "" && p.Name != s.Pool:
			return Result{Reason: config.ReasonRequestedIPOutside, Message: fmt.Sprintf(
				"requested %s is not in IPAddressPool %q (it belongs to %q)", ip, s.Pool, p.Name)}
		case !p.serves(s):
			return Result{Reason: config.ReasonNoPool, Message: fmt.Sprintf(
				"IPAddressPool %q, which holds requested %s, does not serve this Service's namespace or labels", p.Name, ip)}
		case p.AvoidBuggyIPs && isBuggy(ip) && a.ips[ip] == nil:
			return Result{Reason: config.ReasonRequestedIPUnavailable, Message: fmt.Sprintf(
				"requested %s ends in .0 or .255 and IPAddressPool %q has avoidBuggyIPs", ip, p.Name)}
		}
		if reason, msg := a.conflict(ip, s); msg != "" {
			return Result{Reason: reason, Message: "requested " + msg}
		}
	}
	ips = orderByFamily(ips, fams)
	a.claim(s, ips)
	return a.answer(ips)
}

func (a *Allocator) assignFromPools(s Service, fams []corev1.IPFamily) Result {
	var candidates []*pool
	if s.Pool != "" {
		p := a.pools[s.Pool]
		if p == nil {
			return Result{Reason: config.ReasonNoPool, Message: fmt.Sprintf(
				"IPAddressPool %q does not exist; create it or change the address-pool annotation", s.Pool)}
		}
		if !p.serves(s) {
			return Result{Reason: config.ReasonNoPool, Message: fmt.Sprintf(
				"IPAddressPool %q does not serve namespace %q or this Service's labels (see its serviceAllocation)", s.Pool, s.Namespace)}
		}
		candidates = []*pool{p}
	} else {
		for _, p := range a.pools {
			if p.AutoAssign && p.serves(s) {
				candidates = append(candidates, p)
			}
		}
		sort.Slice(candidates, func(i, j int) bool { return candidates[i].before(candidates[j]) })
		if len(candidates) == 0 {
			return Result{Reason: config.ReasonNoPool, Message: fmt.Sprintf(
				"no IPAddressPool with autoAssign serves namespace %q and this Service's labels; "+
					"create one or name a pool in the herald.io/address-pool annotation", s.Namespace)}
		}
	}
	var exhausted, noFamily []string
	for _, p := range candidates {
		pf := p.offered(fams, s.FamilyPolicy)
		if len(pf) == 0 {
			noFamily = append(noFamily, p.Name)
			continue
		}
		var ips []netip.Addr
		for _, f := range pf {
			ip, ok := a.pick(p, f, s)
			if !ok {
				break
			}
			ips = append(ips, ip)
		}
		if len(ips) == len(pf) {
			a.claim(s, ips)
			return a.answer(ips)
		}
		exhausted = append(exhausted, p.Name)
	}
	if len(exhausted) > 0 {
		return Result{Reason: config.ReasonPoolExhausted, Message: fmt.Sprintf(
			"IPAddressPool %s has no free %s address; add addresses or free some",
			strings.Join(exhausted, ", "), familyList(fams))}
	}
	return Result{Reason: config.ReasonFamilyUnavailable, Message: fmt.Sprintf(
		"IPAddressPool %s offers no %s addresses as ipFamilyPolicy %s needs; add such addresses or change ipFamilies",
		strings.Join(noFamily, ", "), familyList(fams), policyName(s.FamilyPolicy))}
}

// pick chooses an address of family f in p for s without taking it: an address already shared under
// s's sharing key if one fits, else the lowest free one.
func (a *Allocator) pick(p *pool, f corev1.IPFamily, s Service) (netip.Addr, bool) {
	var best netip.Addr
	for ip := range a.sharing[s.SharingKey] {
		if addresspool.FamilyOf(ip) == f && a.owner(ip) == p && (!best.IsValid() || ip.Less(best)) {
			if _, msg := a.conflict(ip, s); msg == "" {
				best = ip
			}
		}
	}
	if best.IsValid() {
		return best, true
	}
	start := netip.IPv4Unspecified()
	if f == corev1.IPv6Protocol {
		start = netip.IPv6Unspecified()
	}
	for {
		ip, ok := p.free.lowest(start)
		if !ok {
			return netip.Addr{}, false
		}
		if !p.AvoidBuggyIPs || !isBuggy(ip) {
			return ip, true
		}
		p.free.take(ip) // never given out by this pool: drop it once instead of skipping it every time
	}
}

// claim records that s holds ips (taking free ones from their pools).
func (a *Allocator) claim(s Service, ips []netip.Addr) {
	h := &holding{svc: s, ips: ips}
	h.svc.Current = nil
	a.services[s.Key] = h
	for _, ip := range ips {
		u := a.ips[ip]
		if u == nil {
			u = &ipUse{holders: map[string]*holding{}}
			a.ips[ip] = u
			a.used.ReplaceOrInsert(ip)
			if p := a.owner(ip); p != nil {
				p.free.take(ip)
				p.inUse[addresspool.FamilyOf(ip)]++
			}
		}
		u.holders[s.Key] = h
		if s.SharingKey != "" {
			if a.sharing[s.SharingKey] == nil {
				a.sharing[s.SharingKey] = map[netip.Addr]struct{}{}
			}
			a.sharing[s.SharingKey][ip] = struct{}{}
		}
	}
}

// conflict says why s may not hold ip next to its current holders ("" when it may).
func (a *Allocator) conflict(ip netip.Addr, s Service) (reason, msg string) {
	u := a.ips[ip]
	if u == nil {
		return "", ""
	}
	others := make([]string, 0, len(u.holders))
	for k := range u.holders {
		if k != s.Key {
			others = append(others, k)
		}
	}
	sort.Strings(others)
	// An address no pool holds any more is only ever held by the Services that shared it before
	// (nothing new can get it), so no pool rule applies and a restart must not split them.
	crossNS := true
	if p := a.owner(ip); p != nil {
		crossNS = p.AllowCrossNamespaceSharing
	}
	for _, k := range others {
		o := u.holders[k].svc
		switch {
		case s.SharingKey == "" || o.SharingKey != s.SharingKey:
			return config.ReasonRequestedIPUnavailable, fmt.Sprintf(
				"%s is in use by Service %s; to share it both need the same herald.io/allow-shared-ip key", ip, k)
		case o.Namespace != s.Namespace && !crossNS:
			return config.ReasonSharingConflict, fmt.Sprintf(
				"%s is shared by Service %s in another namespace and its pool does not allow sharing across namespaces", ip, k)
		case o.BackendKey != s.BackendKey:
			return config.ReasonSharingConflict, fmt.Sprintf(
				"%s is shared with Service %s; with externalTrafficPolicy Local both need Local and the same selector", ip, k)
		}
		if port, clash := overlap(o.Ports, s.Ports); clash {
			return config.ReasonSharingConflict, fmt.Sprintf("%s is shared with Service %s, which already uses %s/%d", ip, k, port.Protocol, port.Port)
		}
	}
	return "", ""
}

func overlap(a, b []Port) (Port, bool) {
	for _, p := range a {
		if slices.Contains(b, p) {
			return p, true
		}
	}
	return Port{}, false
}

func (p *pool) serves(s Service) bool {
	if len(p.Namespaces) > 0 || len(p.NamespaceSelectors) > 0 {
		ok := slices.Contains(p.Namespaces, s.Namespace)
		for _, sel := range p.NamespaceSelectors {
			ok = ok || sel.Matches(s.NamespaceLabels)
		}
		if !ok {
			return false
		}
	}
	if len(p.ServiceSelectors) == 0 {
		return true
	}
	for _, sel := range p.ServiceSelectors {
		if sel.Matches(s.Labels) {
			return true
		}
	}
	return false
}

// before orders candidate pools: set priorities ascending, unset (0) last, then age, then name.
func (p *pool) before(q *pool) bool {
	pp, qp := p.Priority, q.Priority
	if (pp == 0) != (qp == 0) {
		return qp == 0
	}
	if pp != qp {
		return pp < qp
	}
	return addresspool.Compare(&p.Pool.Pool, &q.Pool.Pool) < 0
}

// offered returns the families of fams this pool can give under the policy; nil if it cannot serve.
func (p *pool) offered(fams []corev1.IPFamily, policy corev1.IPFamilyPolicy) []corev1.IPFamily {
	var out []corev1.IPFamily
	for _, f := range fams {
		for _, r := range p.Effective() {
			if r.Family() == f {
				out = append(out, f)
				break
			}
		}
	}
	if policy == corev1.IPFamilyPolicyRequireDualStack && len(out) != len(fams) {
		return nil
	}
	if policy != corev1.IPFamilyPolicyPreferDualStack && policy != corev1.IPFamilyPolicyRequireDualStack &&
		(len(out) == 0 || out[0] != fams[0]) {
		return nil
	}
	return out
}

// wantedFamilies is the families a Service gets one address each of, in order.
func wantedFamilies(s Service) ([]corev1.IPFamily, error) {
	fams := s.Families
	if len(fams) == 0 {
		fams = []corev1.IPFamily{corev1.IPv4Protocol}
	}
	for _, f := range fams {
		if f != corev1.IPv4Protocol && f != corev1.IPv6Protocol {
			return nil, fmt.Errorf("unknown IP family %q", f)
		}
	}
	if len(fams) > 2 || (len(fams) == 2 && fams[0] == fams[1]) {
		return nil, fmt.Errorf("ipFamilies %v must name each family at most once", fams)
	}
	switch s.FamilyPolicy {
	case corev1.IPFamilyPolicyRequireDualStack:
		if len(fams) != 2 {
			return nil, fmt.Errorf("ipFamilyPolicy RequireDualStack needs two ipFamilies, got %v", fams)
		}
		return fams, nil
	case corev1.IPFamilyPolicyPreferDualStack:
		return fams, nil
	default:
		return fams[:1], nil
	}
}

func normalise(ips []netip.Addr) []netip.Addr {
	out := make([]netip.Addr, 0, len(ips))
	for _, ip := range ips {
		if ip.IsValid() && !slices.Contains(out, ip.Unmap()) {
			out = append(out, ip.Unmap())
		}
	}
	return out
}

func orderByFamily(ips []netip.Addr, fams []corev1.IPFamily) []netip.Addr {
	out := slices.Clone(ips)
	sort.SliceStable(out, func(i, j int) bool {
		return slices.Index(fams, addresspool.FamilyOf(out[i])) < slices.Index(fams, addresspool.FamilyOf(out[j]))
	})
	return out
}

func sameSet(a, b []netip.Addr) bool {
	if len(a) != len(b) {
		return false
	}
	for _, ip := range a {
		if !slices.Contains(b, ip) {
			return false
		}
	}
	return true
}

func joinIPs(ips []netip.Addr) string {
	s := make([]string, len(ips))
	for i, ip := range ips {
		s[i] = ip.String()
	}
	return strings.Join(s, ", ")
}

func familyList(fams []corev1.IPFamily) string {
	s := make([]string, len(fams))
	for i, f := range fams {
		s[i] = string(f)
	}
	return strings.Join(s, "/")
}

func policyName(p corev1.IPFamilyPolicy) string {
	if p == "" {
		return string(corev1.IPFamilyPolicySingleStack)
	}
	return string(p)
}
