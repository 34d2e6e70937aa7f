package nftables

import "slices"

// packedFragment is a fragment as the backend remembers it between syncs: sorted slices in
// place of maps. A Go map of a handful of entries costs ~400 bytes before its contents, and a
// fragment has three; with 10,000 Services the maps alone were ~10 MB of the proxy's heap. The
// strings are shared with the rendered fragment, not copied. A sync unpacks only the fragments
// of the Services it changes.
type packedFragment struct {
	chains   []packedChain
	sets     []packedSet
	elements []packedElement
}

type packedChain struct {
	name  string
	rules []string
}

type packedSet struct {
	name string
	spec setSpec
}

type packedElement struct {
	elementKey
	value string
}

func pack(fr *fragment) *packedFragment {
	if len(fr.chains) == 0 && len(fr.sets) == 0 && len(fr.elements) == 0 {
		return nil
	}
	p := &packedFragment{
		chains:   make([]packedChain, 0, len(fr.chains)),
		sets:     make([]packedSet, 0, len(fr.sets)),
		elements: make([]packedElement, 0, len(fr.elements)),
	}
	for _, name := range sortedKeys(fr.chains) {
		p.chains = append(p.chains, packedChain{name, slices.Clip(fr.chains[name])})
	}
	for _, name := range sortedKeys(fr.sets) {
		p.sets = append(p.sets, packedSet{name, fr.sets[name]})
	}
	for _, k := range sortedElements(fr.elements) {
		p.elements = append(p.elements, packedElement{k, fr.elements[k]})
	}
	return p
}

// unpack returns the fragment p was packed from (an empty one for nil).
func (p *packedFragment) unpack() *fragment {
	fr := newFragment()
	if p == nil {
		return fr
	}
	for _, c := range p.chains {
		fr.chains[c.name] = c.rules
	}
	for _, s := range p.sets {
		fr.sets[s.name] = s.spec
	}
	for _, e := range p.elements {
		fr.elements[e.elementKey] = e.value
	}
	return fr
}

// anyElement returns one of p's elements, if it has any.
func (p *packedFragment) anyElement() (packedElement, bool) {
	if p == nil || len(p.elements) == 0 {
		return packedElement{}, false
	}
	return p.elements[0], true
}
