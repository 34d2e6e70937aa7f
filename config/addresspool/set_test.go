package addresspool

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/heraldlb/herald/config/v1beta1"
)

var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func apiPool(name string, age int, blocks ...string) *v1beta1.IPAddressPool {
	p := &v1beta1.IPAddressPool{ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: metav1.NewTime(epoch.Add(time.Duration(age) * time.Minute))}}
	for _, b := range blocks {
		p.Spec.Addresses = append(p.Spec.Addresses, v1beta1.AddressBlock(b))
	}
	return p
}

func TestParse(t *testing.T) {
	p := apiPool("p", 0, "10.0.0.0/30", " fd00::1 - fd00::2", "10.0.0.9-10.0.0.1", "nope")
	p.Spec.ServiceAllocation = &v1beta1.ServiceAllocation{
		NamespaceSelectors: []metav1.LabelSelector{{MatchLabels: map[string]string{"team": "x"}}}}
	got := Parse(p)
	if got.Err == nil || !strings.Contains(got.Err.Error(), "spec.addresses[2]") || !strings.Contains(got.Err.Error(), "ends before it starts") {
		t.Errorf("Err = %v, want the reversed range named", got.Err)
	}
	if len(got.Blocks) != 2 || got.Blocks[1].String() != "fd00::1-fd00::2" || len(got.NamespaceSelectors) != 1 || got.Live() {
		t.Errorf("Parse = %+v", got)
	}
	p = apiPool("p", 0, "10.0.0.0/30")
	p.Spec.ServiceAllocation = &v1beta1.ServiceAllocation{ServiceSelectors: []metav1.LabelSelector{
		{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "a", Operator: "In"}}}}}
	if got := Parse(p); got.Err == nil || !strings.Contains(got.Err.Error(), "serviceSelectors") {
		t.Errorf("bad selector: Err = %v", got.Err)
	}
	now := metav1.Now()
	p = apiPool("p", 0, "10.0.0.0/30")
	p.DeletionTimestamp = &now
	if got := Parse(p); got.Err != nil || !got.Deleting || got.Live() {
		t.Errorf("deleting pool: %+v", got)
	}
}

func TestSetOwner(t *testing.T) {
	now := metav1.Now()
	deleting := apiPool("deleting", 0, "10.1.0.0/30", "10.2.0.0/30")
	deleting.DeletionTimestamp = &now
	invalid := apiPool("invalid", 1, "10.3.0.0/30", "10.3.9.9-10.3.0.0")
	set := NewSet([]Pool{
		Parse(apiPool("b", 1, "10.0.0.0/24", "fd00::/64")),
		Parse(apiPool("a", 0, "10.0.0.128/25")),
		Parse(apiPool("c", 2, "10.0.1.0/24", "10.0.0.0/25")),
		Parse(apiPool("tie-b", 3, "10.4.0.0/30")),
		Parse(apiPool("tie-a", 3, "10.4.0.2/31")),
		Parse(deleting),
		Parse(invalid),
		Parse(apiPool("late", 9, "10.2.0.2/31", "::ffff:10.5.0.0/127")),
	})
	for ip, want := range map[string]string{
		"10.0.0.200": "a", "10.0.0.5": "b", "fd00::9": "b", "10.0.1.1": "c", "10.0.2.1": "",
		"10.4.0.3": "tie-a", "10.4.0.1": "tie-b",
		// A pool being deleted or invalid owns only what no live pool holds.
		"10.1.0.1": "deleting", "10.2.0.1": "deleting", "10.2.0.2": "late", "10.3.0.2": "invalid",
		"10.5.0.1": "late", "::ffff:10.5.0.1": "late", "::ffff:10.0.0.5": "b",
	} {
		got := ""
		if p := set.Owner(netip.MustParseAddr(ip)); p != nil {
			got = p.Name
		}
		if got != want {
			t.Errorf("Owner(%s) = %q, want %q", ip, got, want)
		}
	}
	var order []string
	for _, p := range set.Pools() {
		order = append(order, p.Name)
	}
	if got := strings.Join(order, " "); got != "a deleting b invalid c tie-a tie-b late" {
		t.Errorf("order = %s", got)
	}
	for name, want := range map[string]string{"a": "", "b": "a", "c": "b", "tie-b": "tie-a", "late": "", "deleting": "", "invalid": ""} {
		if got := strings.Join(set.Pool(name).Overlaps(), ","); got != want {
			t.Errorf("%s overlaps %q, want %q", name, got, want)
		}
	}
	if got := set.Pool("b").Effective(); len(got) != 2 || got[0].String() != "10.0.0.0-10.0.0.127" {
		t.Errorf("b effective = %v", got)
	}
	if set.Pool("nope") != nil {
		t.Error("unknown pool found")
	}
}
