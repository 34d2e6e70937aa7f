package nftables

import (
	"cmp"
	"slices"
	"strings"
	"time"
)

// fragment is everything one Service contributes to the table: its own chains (with their
// rules) and affinity sets, and its elements in the shared maps and sets. Fragments are pure
// functions of the Service's ports, so an incremental sync diffs the old fragment against the
// new one and sends only the difference.
//
// A fragment is kept between syncs for every Service, so it is three sorted slices rather than
// maps: a Go map of a handful of entries costs ~400 bytes before its contents, and a fragment
// had three; with 10,000 Services the maps were ~10 MB of the proxy's heap when kept, and as
// much again of garbage when a full sync rendered every Service. render appends, then sort
// puts each slice in order; lookups are binary searches.
type fragment struct {
	chains   []fragmentChain
	sets     []fragmentSet
	elements []fragmentElement
}

type fragmentChain struct {
	name  string
	rules []string
}

type fragmentSet struct {
	name string
	spec setSpec
}

// fragmentElement is one element of a shared map or set, with its value ("" for sets).
type fragmentElement struct {
	elementKey
	value string
}

type setSpec struct {
	keyType string
	timeout time.Duration
}

// elementKey names one element of a shared map or set.
type elementKey struct {
	container string // map or set name
	key       string // the key, its parts joined by " . "
}

func (fr *fragment) addChain(name string, rules []string) {
	fr.chains = append(fr.chains, fragmentChain{name, rules})
}

func (fr *fragment) addSet(name string, spec setSpec) {
	fr.sets = append(fr.sets, fragmentSet{name, spec})
}

func (fr *fragment) addElement(k elementKey, value string) {
	fr.elements = append(fr.elements, fragmentElement{k, value})
}

// sort orders the fragment's slices by name (and container, key) and keeps, of entries added
// twice under one name, the last (as assigning to a map would); it returns nil for an empty
// fragment, which the backend need not remember.
func (fr *fragment) sort() *fragment {
	if len(fr.chains) == 0 && len(fr.sets) == 0 && len(fr.elements) == 0 {
		return nil
	}
	fr.chains = sortedLastWins(fr.chains, func(a, b fragmentChain) int { return strings.Compare(a.name, b.name) })
	fr.sets = sortedLastWins(fr.sets, func(a, b fragmentSet) int { return strings.Compare(a.name, b.name) })
	fr.elements = sortedLastWins(fr.elements, func(a, b fragmentElement) int { return compareElementKeys(a.elementKey, b.elementKey) })
	return fr
}

// sortedLastWins sorts s stably by cmp and drops every entry followed by one that compares
// equal, in place; the result has no spare capacity.
func sortedLastWins[T any](s []T, cmp func(a, b T) int) []T {
	slices.SortStableFunc(s, cmp)
	out := s[:0]
	for i := range s {
		if i+1 < len(s) && cmp(s[i], s[i+1]) == 0 {
			continue
		}
		out = append(out, s[i])
	}
	return slices.Clip(out)
}

func compareElementKeys(a, b elementKey) int {
	return cmp.Or(strings.Compare(a.container, b.container), strings.Compare(a.key, b.key))
}

// chain returns the rules of the chain named name, if the fragment has it. A nil fragment is
// empty.
func (fr *fragment) chain(name string) ([]string, bool) {
	if fr == nil {
		return nil, false
	}
	i, ok := slices.BinarySearchFunc(fr.chains, name, func(c fragmentChain, name string) int { return strings.Compare(c.name, name) })
	if !ok {
		return nil, false
	}
	return fr.chains[i].rules, true
}

func (fr *fragment) set(name string) (setSpec, bool) {
	if fr == nil {
		return setSpec{}, false
	}
	i, ok := slices.BinarySearchFunc(fr.sets, name, func(s fragmentSet, name string) int { return strings.Compare(s.name, name) })
	if !ok {
		return setSpec{}, false
	}
	return fr.sets[i].spec, true
}

func (fr *fragment) element(k elementKey) (string, bool) {
	if fr == nil {
		return "", false
	}
	i, ok := slices.BinarySearchFunc(fr.elements, k, func(e fragmentElement, k elementKey) int { return compareElementKeys(e.elementKey, k) })
	if !ok {
		return "", false
	}
	return fr.elements[i].value, true
}

// anyElement returns one of the fragment's elements, if it has any.
func (fr *fragment) anyElement() (fragmentElement, bool) {
	if fr == nil || len(fr.elements) == 0 {
		return fragmentElement{}, false
	}
	return fr.elements[0], true
}
