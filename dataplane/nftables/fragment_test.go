package nftables

import (
	"reflect"
	"testing"
)

// A fragment sorts its entries, keeps the last of those added twice (as a map would) and
// finds them again; an empty one is nil.
func TestFragmentSortsAndKeepsTheLast(t *testing.T) {
	if (&fragment{}).sort() != nil {
		t.Fatal("an empty fragment is not nil")
	}
	fr := &fragment{}
	fr.addElement(elementKey{"m", "b"}, "goto x")
	fr.addElement(elementKey{"m", "a"}, "first")
	fr.addElement(elementKey{"hairpin4", "z"}, "")
	fr.addElement(elementKey{"m", "a"}, "second")
	fr.addChain("c2", []string{"drop"})
	fr.addChain("c1", []string{"accept"})
	fr = fr.sort()
	want := []fragmentElement{{elementKey{"hairpin4", "z"}, ""}, {elementKey{"m", "a"}, "second"}, {elementKey{"m", "b"}, "goto x"}}
	if !reflect.DeepEqual(fr.elements, want) {
		t.Fatalf("elements = %v, want %v", fr.elements, want)
	}
	if v, ok := fr.element(elementKey{"m", "a"}); !ok || v != "second" {
		t.Fatalf("element m/a = %q %v", v, ok)
	}
	if _, ok := fr.element(elementKey{"m", "c"}); ok {
		t.Fatal("found an element never added")
	}
	if r, ok := fr.chain("c1"); !ok || r[0] != "accept" || fr.chains[0].name != "c1" {
		t.Fatalf("chains = %v", fr.chains)
	}
	var none *fragment
	if _, ok := none.chain("c1"); ok {
		t.Fatal("a nil fragment has a chain")
	}
}
