// Package addresspool is the one parsed model of IPAddressPools that every part of Herald reads:
// a pool's address blocks and selectors are parsed once (Parse), pools are ordered once (Compare:
// oldest first, ties by name), and "which pool owns this IP" has one answer (Set.Owner). The
// controller's allocator gives out addresses by it, the controller's Announced condition and the
// speakers' announcers look up a Service's pool by it, the BGP translation reads a pool's blocks
// from it and heraldctl status shows it, so none of them can disagree with another.
package addresspool

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/heraldlb/herald/config/v1beta1"
)

// Pool is an IPAddressPool parsed once.
type Pool struct {
	Name string
	// Created orders pools (Compare): where pools overlap, the older one owns the addresses.
	Created time.Time
	// Deleting: the pool has a deletion timestamp (its finalizer keeps it while Services hold its
	// addresses). It gives out nothing more.
	Deleting bool
	// Blocks are spec.addresses in spec order; when Err is set, only the ones that parse.
	Blocks []Block
	// NamespaceSelectors and ServiceSelectors are spec.serviceAllocation's, parsed.
	NamespaceSelectors []labels.Selector
	ServiceSelectors   []labels.Selector
	// Err says what in the spec is malformed (the first such field) and how to find it; a pool
	// with Err gives out nothing until it is fixed.
	Err error
	// Object is the pool parsed (nil for a Pool built by hand).
	Object *v1beta1.IPAddressPool

	// effective and overlaps are set by the Set holding the pool (NewSet).
	effective []Block
	overlaps  []string
}

// Parse reads an IPAddressPool. It never fails: what is malformed is in Pool.Err.
func Parse(p *v1beta1.IPAddressPool) Pool {
	out := Pool{Name: p.Name, Created: p.CreationTimestamp.Time, Deleting: p.DeletionTimestamp != nil, Object: p}
	fail := func(err error) {
		if out.Err == nil {
			out.Err = err
		}
	}
	for i, a := range p.Spec.Addresses {
		b, err := ParseBlock(string(a))
		if err != nil {
			fail(fmt.Errorf("spec.addresses[%d]: %w", i, err))
			continue
		}
		out.Blocks = append(out.Blocks, b)
	}
	if sa := p.Spec.ServiceAllocation; sa != nil {
		var err error
		if out.NamespaceSelectors, err = selectors(sa.NamespaceSelectors); err != nil {
			fail(fmt.Errorf("spec.serviceAllocation.namespaceSelectors: %w", err))
		}
		if out.ServiceSelectors, err = selectors(sa.ServiceSelectors); err != nil {
			fail(fmt.Errorf("spec.serviceAllocation.serviceSelectors: %w", err))
		}
	}
	return out
}

func selectors(in []metav1.LabelSelector) ([]labels.Selector, error) {
	out := make([]labels.Selector, 0, len(in))
	for i := range in {
		sel, err := metav1.LabelSelectorAsSelector(&in[i])
		if err != nil {
			return nil, fmt.Errorf("[%d]: %w", i, err)
		}
		out = append(out, sel)
	}
	return out, nil
}

// Live reports whether the pool gives out addresses: it is valid and not being deleted.
func (p *Pool) Live() bool { return p.Err == nil && !p.Deleting }

// Effective is what the pool owns in the Set it came from: its blocks minus every address a pool
// before it (Set.Owner's order) holds. Only these addresses are given out from a live pool.
func (p *Pool) Effective() []Block { return p.effective }

// Overlaps names the older live pools that hold some of a live pool's addresses (and so give
// them out instead of it), in the Set it came from; the Overlap condition reports them.
func (p *Pool) Overlaps() []string { return p.overlaps }

// Compare orders pools oldest first, ties by name: where two pools hold an address, the first
// owns it.
func Compare(a, b *Pool) int { return compareAge(a.Created, a.Name, b.Created, b.Name) }

// SortObjects sorts API objects in Compare order.
func SortObjects(pools []*v1beta1.IPAddressPool) {
	slices.SortFunc(pools, func(a, b *v1beta1.IPAddressPool) int {
		return compareAge(a.CreationTimestamp.Time, a.Name, b.CreationTimestamp.Time, b.Name)
	})
}

func compareAge(aCreated time.Time, aName string, bCreated time.Time, bName string) int {
	return cmp.Or(aCreated.Compare(bCreated), strings.Compare(aName, bName))
}
