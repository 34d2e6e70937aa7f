package config

import (
	"slices"
	"testing"
)

func TestAnnotationPrefersHeraldOverAliases(t *testing.T) {
	cases := []struct {
		name        string
		annotations map[string]string
		want, key   string
	}{
		{"none", nil, "", ""},
		{"herald", map[string]string{AnnotationAddressPool: "a"}, "a", AnnotationAddressPool},
		{"metallb.io", map[string]string{"metallb.io/address-pool": "b"}, "b", "metallb.io/address-pool"},
		{"universe", map[string]string{"metallb.universe.tf/address-pool": "c"}, "c", "metallb.universe.tf/address-pool"},
		{"herald wins", map[string]string{
			"metallb.universe.tf/address-pool": "c", "metallb.io/address-pool": "b", AnnotationAddressPool: "a",
		}, "a", AnnotationAddressPool},
		{"metallb.io beats universe", map[string]string{
			"metallb.universe.tf/address-pool": "c", "metallb.io/address-pool": "b",
		}, "b", "metallb.io/address-pool"},
	}
	for _, c := range cases {
		got, key := Annotation(c.annotations, AnnotationAddressPool)
		if got != c.want || key != c.key {
			t.Errorf("%s: got (%q, %q), want (%q, %q)", c.name, got, key, c.want, c.key)
		}
	}
	if v, _ := Annotation(map[string]string{"metallb.io/ipvs-scheduler": "lc"}, AnnotationIPVSScheduler); v != "" {
		t.Errorf("ipvs-scheduler has no MetalLB alias, got %q", v)
	}
}

func TestOverridden(t *testing.T) {
	const io, universe = "metallb.io/address-pool", "metallb.universe.tf/address-pool"
	for _, c := range []struct {
		name        string
		annotations map[string]string
		want        []string
	}{
		{"none", nil, nil},
		{"one", map[string]string{io: "a"}, nil},
		{"agreeing", map[string]string{AnnotationAddressPool: "a", io: "a", universe: "a"}, nil},
		{"MetalLB's overridden", map[string]string{AnnotationAddressPool: "a", io: "b", universe: "a"}, []string{io}},
		{"both MetalLB's overridden", map[string]string{AnnotationAddressPool: "a", io: "b", universe: "c"}, []string{io, universe}},
		{"universe under metallb.io", map[string]string{io: "b", universe: "c"}, []string{universe}},
	} {
		if got := Overridden(c.annotations, AnnotationAddressPool); !slices.Equal(got, c.want) {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}
