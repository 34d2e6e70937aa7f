package bgpconfig

import (
	"cmp"
	"crypto/sha256"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"

	"github.com/heraldlb/herald/config"
	"github.com/heraldlb/herald/config/addresspool"
	"github.com/heraldlb/herald/config/v1beta1"
)

// Input is everything one node's speaker needs to decide what its BGP announcer does.
type Input struct {
	Node           Node
	Peers          []v1beta1.BGPPeer
	Advertisements []v1beta1.BGPAdvertisement
	// L2Advertisements are only checked (Validate); the speakers' L2 announcer reads them itself.
	L2Advertisements []v1beta1.L2Advertisement
	Communities      []v1beta1.Community
	BFDProfiles      []v1beta1.BFDProfile
	Pools            []v1beta1.IPAddressPool
	// Passwords holds the "password" key of the Secrets BGPPeers refer to, by "namespace/name"
	// (PasswordSecret);
	// a Secret that is missing (or has no such key) is absent.
	Passwords map[string]string
	// SecretNamespace is where a passwordSecret without a namespace is looked up (Herald's own).
	SecretNamespace string
	Services        []Service
}

// PasswordSecret is the Secret a BGPPeer's passwordSecret names (nil: none); its String() is the
// key of Input.Passwords. A reference without a namespace is in secretNamespace (Herald's own).
func PasswordSecret(peer *v1beta1.BGPPeer, secretNamespace string) *types.NamespacedName {
	ref := peer.Spec.PasswordSecret
	if ref == nil {
		return nil
	}
	key := types.NamespacedName{Namespace: ref.Namespace, Name: ref.Name}
	if key.Namespace == "" {
		key.Namespace = secretNamespace
	}
	return &key
}

// Node is the node the speaker runs on.
type Node struct {
	Name   string
	Labels map[string]string
	// Addresses are the node's addresses; the first IPv4 one is the default router ID.
	Addresses []netip.Addr
}

// Service is a LoadBalancer Service with its ingress IPs.
type Service struct {
	// Name is "namespace/name".
	Name   string
	Labels map[string]string
	IPs    []netip.Addr
	// Pool is the IPAddressPool the IPs were allocated from.
	Pool string
	// LocalTrafficOnly is externalTrafficPolicy: Local; such a Service is advertised only by nodes
	// with a ready local endpoint (HasLocalEndpoints, from the data plane's local-endpoint view).
	LocalTrafficOnly  bool
	HasLocalEndpoints bool
}

// Problem is something wrong (or not supported) in one object: the caller sets it as a condition
// on the object and records an event. Other objects keep working.
type Problem struct {
	Kind string // BGPPeer, BGPAdvertisement, Community, BFDProfile, L2Advertisement
	Name string
	// Condition is config.ConditionValid (the object is not used, or partly) or
	// config.ConditionNotSupported (a field is ignored).
	Condition string
	Reason    string
	Message   string
}

// Reasons of Problems.
const (
	ReasonInvalidASN        = "InvalidASN"
	ReasonInvalidAddress    = "InvalidAddress"
	ReasonInvalidTimers     = "InvalidTimers"
	ReasonSecretNotFound    = "SecretNotFound"
	ReasonBFDProfileMissing = "BFDProfileNotFound"
	ReasonDuplicatePeer     = "DuplicatePeerAddress"
	ReasonRouterIDConflict  = "RouterIDConflict"
	ReasonUnknownPool       = "UnknownPool"
	ReasonUnknownPeer       = "UnknownPeer"
	ReasonInvalidCommunity  = "InvalidCommunity"
	ReasonInvalidSelector   = "InvalidSelector"
	ReasonAggregation       = "InvalidAggregationLength"
	ReasonLocalPrefConflict = "LocalPrefConflict"
	ReasonNotSupported      = "NotSupported"
)

// Result is the translation of an Input.
type Result struct {
	Desired  Desired
	Problems []Problem
	// Announced lists, per Service IP this node advertises, the peers: the BGP entries of the
	// node's SpeakerStatus announcements.
	Announced map[netip.Addr]Announced
}

// Announced is one advertised IP.
type Announced struct {
	Peers []string
	// ClusterPolicy: a Service with externalTrafficPolicy Cluster has it advertised, so readers
	// derive this node's announcement of it (Announcers) and the node's status does not list it.
	ClusterPolicy bool
}

// Default BGPPeer timers (MetalLB's) and BFDProfile values.
const (
	defaultHoldTime        = 90 * time.Second
	defaultConnectTime     = 10 * time.Second
	defaultBFDInterval     = 300 // ms
	defaultBFDMultiplier   = 3
	minimumNonZeroHoldTime = 3 * time.Second
)

// Translate computes what the node's announcer should do. It is a pure function of its input.
func Translate(in Input) Result {
	return translate(in, false)
}

// Validate checks the BGP objects of in for every node at once (in.Node and in.Services are
// ignored): the Problems the controller turns into Valid and NotSupported conditions. Problems
// that only exist on some node (two peers of one node with the same address or different router
// IDs) are left to the speakers, which report them as events.
func Validate(in Input) []Problem {
	return translate(in, true).Problems
}

func translate(in Input, everyNode bool) Result {
	t := translation{in: in, everyNode: everyNode, res: Result{
		Desired:   Desired{Peers: map[string]Peer{}, Routes: map[string]map[netip.Prefix]Attributes{}},
		Announced: make(map[netip.Addr]Announced, len(in.Services)),
	}}
	t.communityAliases()
	t.bfdProfiles()
	t.peers()
	if !everyNode {
		t.routerID()
		t.advertisements()
	} else {
		t.validateAdvertisements()
		t.validateL2Advertisements()
	}
	sort.SliceStable(t.res.Problems, func(i, j int) bool {
		a, b := t.res.Problems[i], t.res.Problems[j]
		return a.Kind+"/"+a.Name < b.Kind+"/"+b.Name
	})
	return t.res
}

type translation struct {
	in Input
	// everyNode validates for all nodes: node selectors select every node.
	everyNode bool
	res       Result
	aliases   map[string]community
	bfd       map[string]*BFD
	// allPeers are the names of every BGPPeer (selected for this node or not).
	allPeers map[string]bool
	// routerIDs are the routerIDs set on this node's peers, by peer name.
	routerIDs map[string]netip.Addr
}

func (t *translation) problem(kind, name, cond, reason, format string, args ...any) {
	t.res.Problems = append(t.res.Problems, Problem{Kind: kind, Name: name, Condition: cond, Reason: reason, Message: fmt.Sprintf(format, args...)})
}

func (t *translation) communityAliases() {
	t.aliases = map[string]community{}
	objects := slices.Clone(t.in.Communities)
	slices.SortFunc(objects, func(a, b v1beta1.Community) int { return strings.Compare(a.Name, b.Name) })
	for _, c := range objects {
		for _, a := range c.Spec.Communities {
			v, err := parseCommunity(a.Value)
			if err != nil {
				t.problem("Community", c.Name, config.ConditionValid, ReasonInvalidCommunity, "alias %q: %v", a.Name, err)
				continue
			}
			if _, dup := t.aliases[a.Name]; dup {
				t.problem("Community", c.Name, config.ConditionValid, ReasonInvalidCommunity,
					"alias %q is defined more than once; the first definition (by object name) is used", a.Name)
				continue
			}
			t.aliases[a.Name] = v
		}
	}
}

func (t *translation) bfdProfiles() {
	t.bfd = map[string]*BFD{}
	for _, p := range t.in.BFDProfiles {
		s := p.Spec
		if s.EchoMode || s.EchoInterval != nil {
			t.problem("BFDProfile", p.Name, config.ConditionNotSupported, ReasonNotSupported,
				"echoMode/echoInterval not supported by the embedded BFD (asynchronous mode only); the profile's timers are used without echo")
		}
		t.bfd[p.Name] = &BFD{
			ReceiveInterval:  time.Duration(int32Or(s.ReceiveInterval, defaultBFDInterval)) * time.Millisecond,
			TransmitInterval: time.Duration(int32Or(s.TransmitInterval, defaultBFDInterval)) * time.Millisecond,
			// The CRD bounds both: multiplier 2-255, minimumTtl 1-254.
			DetectMultiplier: uint8(int32Or(s.DetectMultiplier, defaultBFDMultiplier)),
			Passive:          s.PassiveMode,
			MinimumTTL:       uint8(int32Or(s.MinimumTTL, 0)),
		}
	}
}

func int32Or(p *int32, def int32) int32 {
	if p == nil {
		return def
	}
	return *p
}

// nodeSelected reports whether the node matches any of selectors (none selects every node).
func nodeSelected(selectors []metav1.LabelSelector, l map[string]string) (bool, error) {
	if len(selectors) == 0 {
		return true, nil
	}
	for _, ls := range selectors {
		sel, err := metav1.LabelSelectorAsSelector(&ls)
		if err != nil {
			return false, err
		}
		if sel.Matches(labels.Set(l)) {
			return true, nil
		}
	}
	return false, nil
}

func validASN(n int64) bool { return n >= 1 && n <= 1<<32-1 }

func (t *translation) peers() {
	t.allPeers = map[string]bool{}
	t.routerIDs = map[string]netip.Addr{}
	byAddr := map[netip.Addr]string{}
	peers := slices.Clone(t.in.Peers)
	slices.SortFunc(peers, func(a, b v1beta1.BGPPeer) int { return strings.Compare(a.Name, b.Name) })
	for _, bp := range peers {
		t.allPeers[bp.Name] = true
		p, ok := t.peer(bp)
		if !ok {
			continue
		}
		if other, dup := byAddr[p.Address]; dup && !t.everyNode {
			t.problem("BGPPeer", bp.Name, config.ConditionValid, ReasonDuplicatePeer,
				"node %s already peers with %s through BGPPeer %s; one session per router address", t.in.Node.Name, p.Address, other)
			continue
		}
		byAddr[p.Address] = bp.Name
		t.res.Desired.Peers[p.Name] = p
	}
}

// peer resolves one BGPPeer for this node; false when it does not apply here or is invalid.
func (t *translation) peer(bp v1beta1.BGPPeer) (Peer, bool) {
	s := bp.Spec
	bad := func(reason, format string, args ...any) (Peer, bool) {
		t.problem("BGPPeer", bp.Name, config.ConditionValid, reason, format, args...)
		return Peer{}, false
	}
	selected, err := nodeSelected(s.NodeSelectors, t.in.Node.Labels)
	if err != nil {
		return bad(ReasonInvalidSelector, "nodeSelectors: %v", err)
	}
	if !selected && !t.everyNode {
		return Peer{}, false
	}
	if s.VRF != "" {
		t.problem("BGPPeer", bp.Name, config.ConditionNotSupported, ReasonNotSupported,
			"vrf %q: per-VRF sessions are not supported yet; the session is not opened", s.VRF)
		return Peer{}, false
	}
	if !validASN(s.MyASN) {
		return bad(ReasonInvalidASN, "myASN %d is out of range (1-4294967295)", s.MyASN)
	}
	peerASN := s.PeerASN
	switch {
	case s.DynamicASN == "internal" && peerASN == 0:
		peerASN = s.MyASN
	}
	// dynamicASN external: ASN 0 makes GoBGP accept whatever ASN the router opens with.
	if !validASN(peerASN) && (s.DynamicASN != "external" || peerASN != 0) {
		return bad(ReasonInvalidASN, "peerASN %d is out of range (1-4294967295)", peerASN)
	}
	addr, err := netip.ParseAddr(s.PeerAddress)
	if err != nil {
		return bad(ReasonInvalidAddress, "peerAddress: %v", err)
	}
	p := Peer{
		Name: bp.Name, MyASN: uint32(s.MyASN), ASN: uint32(peerASN), Address: addr.Unmap(),
		EBGPMultiHop: s.EBGPMultiHop, GracefulRestart: s.EnableGracefulRestart,
		HoldTime: defaultHoldTime, ConnectTime: defaultConnectTime,
	}
	if s.PeerPort != 0 && s.PeerPort != 179 {
		p.Port = uint16(s.PeerPort)
	}
	if s.SourceAddress != "" {
		src, err := netip.ParseAddr(s.SourceAddress)
		if err != nil {
			return bad(ReasonInvalidAddress, "sourceAddress: %v", err)
		}
		if src.Unmap().Is4() != p.Address.Is4() {
			return bad(ReasonInvalidAddress, "sourceAddress %s and peerAddress %s are of different families", src, p.Address)
		}
		p.SourceAddress = src.Unmap()
	}
	if s.RouterID != "" {
		id, err := netip.ParseAddr(s.RouterID)
		if err != nil || !id.Is4() {
			return bad(ReasonInvalidAddress, "routerID %q is not an IPv4 address", s.RouterID)
		}
		t.routerIDs[bp.Name] = id
	}
	if s.HoldTime != nil {
		p.HoldTime = s.HoldTime.Duration
	}
	if p.HoldTime != 0 && p.HoldTime < minimumNonZeroHoldTime {
		return bad(ReasonInvalidTimers, "holdTime %v: must be 0 (no keepalives) or at least 3s (RFC 4271)", p.HoldTime)
	}
	p.KeepaliveTime = p.HoldTime / 3
	if s.KeepaliveTime != nil {
		p.KeepaliveTime = s.KeepaliveTime.Duration
		if p.HoldTime != 0 && p.KeepaliveTime >= p.HoldTime {
			return bad(ReasonInvalidTimers, "keepaliveTime %v must be shorter than holdTime %v", p.KeepaliveTime, p.HoldTime)
		}
	}
	if s.ConnectTime != nil {
		if s.ConnectTime.Duration < time.Second {
			return bad(ReasonInvalidTimers, "connectTime %v: must be at least 1s", s.ConnectTime.Duration)
		}
		p.ConnectTime = s.ConnectTime.Duration
	}
	switch {
	case s.Password != "" && s.PasswordSecret != nil:
		return bad(ReasonSecretNotFound, "set password or passwordSecret, not both")
	case s.Password != "":
		p.Password = s.Password
	case s.PasswordSecret != nil:
		key := PasswordSecret(&bp, t.in.SecretNamespace)
		pw, ok := t.in.Passwords[key.String()]
		if !ok || pw == "" {
			return bad(ReasonSecretNotFound,
				"passwordSecret %s does not exist or has no \"password\" key; the session is not opened without its password", key)
		}
		p.Password = pw
	}
	if s.BFDProfile != "" {
		b, ok := t.bfd[s.BFDProfile]
		if !ok {
			return bad(ReasonBFDProfileMissing, "bfdProfile %q does not exist; create it or remove bfdProfile", s.BFDProfile)
		}
		bfd := *b
		p.BFD = &bfd
	}
	return p, true
}

// routerID picks the node's BGP identifier: the routerID its peers set (GoBGP has one per
// instance, so peers of one node must agree), else the node's first IPv4 address, else one
// derived from the node's name (IPv6-only nodes).
func (t *translation) routerID() {
	for _, name := range slices.Sorted(maps.Keys(t.routerIDs)) {
		if _, used := t.res.Desired.Peers[name]; !used {
			continue
		}
		id := t.routerIDs[name]
		if !t.res.Desired.RouterID.IsValid() {
			t.res.Desired.RouterID = id
		} else if id != t.res.Desired.RouterID {
			t.problem("BGPPeer", name, config.ConditionNotSupported, ReasonRouterIDConflict,
				"routerID %s differs from %s, set by another peer of node %s; one node has one router ID, %s is used",
				id, t.res.Desired.RouterID, t.in.Node.Name, t.res.Desired.RouterID)
		}
	}
	if t.res.Desired.RouterID.IsValid() {
		return
	}
	for _, a := range t.in.Node.Addresses {
		if a.Unmap().Is4() {
			t.res.Desired.RouterID = a.Unmap()
			return
		}
	}
	sum := sha256.Sum256([]byte(t.in.Node.Name))
	sum[0] |= 1 // never 0.0.0.0
	t.res.Desired.RouterID = netip.AddrFrom4([4]byte(sum[:4]))
}

// advertisement is a validated BGPAdvertisement.
type advertisement struct {
	name         string
	selection    Selection
	peers        []string // peers of this node it goes to
	lenV4, lenV6 int
	attrs        Attributes
}

func (t *translation) poolsByName() map[string]v1beta1.IPAddressPool {
	pools := map[string]v1beta1.IPAddressPool{}
	for _, p := range t.in.Pools {
		pools[p.Name] = p
	}
	return pools
}

func (t *translation) validateAdvertisements() {
	pools := t.poolsByName()
	for _, ba := range t.in.Advertisements {
		t.advertisement(ba, pools)
	}
}

func (t *translation) advertisements() {
	pools := t.poolsByName()
	var ads []advertisement
	for _, ba := range t.in.Advertisements {
		if ad, ok := t.advertisement(ba, pools); ok {
			ads = append(ads, ad)
		}
	}
	slices.SortFunc(ads, func(a, b advertisement) int { return strings.Compare(a.name, b.name) })

	// localPrefOwner remembers which advertisement set the local preference of a (peer, prefix).
	type peerPrefix struct {
		peer   string
		prefix netip.Prefix
	}
	localPrefOwner := map[peerPrefix]string{}
	// conflictReported keeps one problem per pair of advertisements, not one per prefix.
	conflictReported := map[[2]string]bool{}
	// The routes and Announced do not depend on the order the Services are taken in; which
	// prefix a LocalPref conflict names does, and for it they are taken in name order (then input
	// order, for a Service's several entries). Only then: with a thousand Services, sorting them
	// was a third of this function's time.
	order := make([]int, len(t.in.Services))
	for i := range order {
		order[i] = i
	}
	localPrefs := 0
	for _, ad := range ads {
		if ad.attrs.LocalPref != 0 {
			localPrefs++
		}
	}
	if localPrefs > 1 {
		slices.SortFunc(order, func(a, b int) int {
			return cmp.Or(strings.Compare(t.in.Services[a].Name, t.in.Services[b].Name), a-b)
		})
	}
	for _, i := range order {
		svc := &t.in.Services[i]
		if svc.LocalTrafficOnly && !svc.HasLocalEndpoints {
			continue
		}
		for _, ip := range svc.IPs {
			ip = ip.Unmap()
			for _, ad := range ads {
				if !ad.selection.Selects(svc.Pool, svc.Labels) {
					continue
				}
				bits := ad.lenV4
				if ip.Is6() {
					bits = ad.lenV6
				}
				prefix := netip.PrefixFrom(ip, bits).Masked()
				for _, peer := range ad.peers {
					if t.res.Desired.Peers[peer].Address.Is4() != ip.Is4() {
						continue
					}
					routes := t.res.Desired.Routes[peer]
					if routes == nil {
						routes = make(map[netip.Prefix]Attributes, len(t.in.Services))
						t.res.Desired.Routes[peer] = routes
					}
					old, exists := routes[prefix]
					key := peerPrefix{peer, prefix}
					if exists && ad.attrs.LocalPref != 0 && old.LocalPref != 0 && old.LocalPref != ad.attrs.LocalPref {
						if pair := [2]string{ad.name, localPrefOwner[key]}; !conflictReported[pair] {
							conflictReported[pair] = true
							t.problem("BGPAdvertisement", ad.name, config.ConditionValid, ReasonLocalPrefConflict,
								"localPref %d for %s towards %s conflicts with %d from BGPAdvertisement %s; the higher one is used",
								ad.attrs.LocalPref, prefix, peer, old.LocalPref, localPrefOwner[key])
						}
					}
					if ad.attrs.LocalPref > old.LocalPref {
						localPrefOwner[key] = ad.name
					}
					routes[prefix] = old.merge(ad.attrs)
					an := t.res.Announced[ip]
					an.Peers = appendUnique(an.Peers, peer)
					an.ClusterPolicy = an.ClusterPolicy || !svc.LocalTrafficOnly
					t.res.Announced[ip] = an
				}
			}
		}
	}
}

func appendUnique(list []string, s string) []string {
	if slices.Contains(list, s) {
		return list
	}
	list = append(list, s)
	slices.Sort(list)
	return list
}

// advertisement validates one BGPAdvertisement for this node; false when it does not apply here
// or is invalid (then nothing of it is advertised, and a Problem says why).
func (t *translation) advertisement(ba v1beta1.BGPAdvertisement, pools map[string]v1beta1.IPAddressPool) (advertisement, bool) {
	s := ba.Spec
	bad := func(reason, format string, args ...any) (advertisement, bool) {
		t.problem("BGPAdvertisement", ba.Name, config.ConditionValid, reason, format, args...)
		return advertisement{}, false
	}
	ad := advertisement{name: ba.Name, lenV4: 32, lenV6: 128}
	if s.AggregationLength != nil {
		ad.lenV4 = int(*s.AggregationLength)
	}
	if s.AggregationLengthV6 != nil {
		ad.lenV6 = int(*s.AggregationLengthV6)
	}
	if ad.lenV4 < 0 || ad.lenV4 > 32 || ad.lenV6 < 0 || ad.lenV6 > 128 {
		return bad(ReasonAggregation, "aggregationLength must be 0-32 and aggregationLengthV6 0-128")
	}

	var ok bool
	if ad.selection, ok = t.selection("BGPAdvertisement", ba.Name, s.AdvertisementSelection, pools); !ok {
		return advertisement{}, false
	}
	for name := range ad.selection.Pools {
		if err := checkAggregation(pools[name], ad.lenV4, ad.lenV6); err != nil {
			return bad(ReasonAggregation, "pool %s: %v", name, err)
		}
	}

	for _, c := range s.Communities {
		v, ok := t.aliases[c]
		if !ok {
			var err error
			if v, err = parseCommunity(c); err != nil {
				return bad(ReasonInvalidCommunity, "communities: %v", err)
			}
		}
		if v.large {
			ad.attrs.LargeCommunities = append(ad.attrs.LargeCommunities, v.text)
		} else {
			ad.attrs.Communities = append(ad.attrs.Communities, v.text)
		}
	}
	ad.attrs = ad.attrs.merge(Attributes{}) // sorted, unique
	if s.LocalPref != nil {
		if *s.LocalPref < 0 || *s.LocalPref > 1<<32-1 {
			return bad(ReasonInvalidASN, "localPref %d is out of range (0-4294967295)", *s.LocalPref)
		}
		ad.attrs.LocalPref = uint32(*s.LocalPref)
	}

	for _, name := range s.Peers {
		if !t.allPeers[name] {
			return bad(ReasonUnknownPeer, "peers names %q, which is not a BGPPeer", name)
		}
	}
	selected, err := nodeSelected(s.NodeSelectors, t.in.Node.Labels)
	if err != nil {
		return bad(ReasonInvalidSelector, "nodeSelectors: %v", err)
	}
	if !selected && !t.everyNode {
		return advertisement{}, false
	}
	for name := range t.res.Desired.Peers {
		if len(s.Peers) == 0 || slices.Contains(s.Peers, name) {
			ad.peers = append(ad.peers, name)
		}
	}
	slices.Sort(ad.peers)
	return ad, true
}

// selection reads what an advertisement of kind selects (Select), and reports a pool that does not
// exist or a selector that does not parse as a problem of the object.
func (t *translation) selection(kind, name string, s v1beta1.AdvertisementSelection, pools map[string]v1beta1.IPAddressPool) (Selection, bool) {
	sel, problem := Select(s, pools)
	if problem != nil {
		t.problem(kind, name, config.ConditionValid, problem.Reason, "%s", problem.Message)
		return Selection{}, false
	}
	return sel, true
}

// validateL2Advertisements checks what an L2Advertisement selects (the speakers' L2 announcer
// reads the same fields; an unknown pool there selects nothing) and reports the fields Herald
// accepts for migration but does not implement.
func (t *translation) validateL2Advertisements() {
	pools := t.poolsByName()
	for _, la := range t.in.L2Advertisements {
		t.selection("L2Advertisement", la.Name, la.Spec.AdvertisementSelection, pools)
		if len(la.Spec.PreferredNodeSelectors) > 0 {
			t.problem("L2Advertisement", la.Name, config.ConditionNotSupported, ReasonNotSupported,
				"preferredNodeSelectors is not implemented and is ignored: the announcing node is chosen among all selected nodes")
		}
	}
}

// checkAggregation refuses aggregation lengths shorter than a pool's blocks: the aggregated route
// would attract traffic for addresses outside the pool.
func checkAggregation(pool v1beta1.IPAddressPool, lenV4, lenV6 int) error {
	for i, block := range pool.Spec.Addresses {
		b, err := addresspool.ParseBlock(string(block))
		if err != nil {
			return fmt.Errorf("spec.addresses[%d]: %w", i, err)
		}
		for _, p := range b.Prefixes() {
			l := lenV4
			if p.Addr().Is6() {
				l = lenV6
			}
			if l < p.Bits() {
				return fmt.Errorf("aggregation length /%d is shorter than the pool's %s: the route would cover addresses outside the pool", l, p)
			}
		}
	}
	return nil
}
