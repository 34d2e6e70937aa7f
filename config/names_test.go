package config

import "testing"

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
