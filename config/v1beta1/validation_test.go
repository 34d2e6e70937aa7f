package v1beta1_test

import (
	"context"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/heraldlb/herald/config/v1beta1"
	"github.com/heraldlb/herald/internal/realapi"
)

// TestSchemaOnRealAPIServer installs the generated CRDs into a real kube-apiserver and checks that
// the schema accepts valid objects and rejects invalid ones with a message that says what to fix:
// this is the validation users get without an admission webhook.
func TestSchemaOnRealAPIServer(t *testing.T) {
	api := realapi.Start(t)
	c := api.Client(t)
	ctx := context.Background()
	meta := func(name string) metav1.ObjectMeta { return metav1.ObjectMeta{Name: name} }
	i32 := func(v int32) *int32 { return &v }

	valid := []client.Object{
		&v1beta1.IPAddressPool{ObjectMeta: meta("mixed"), Spec: v1beta1.IPAddressPoolSpec{
			Addresses: []v1beta1.AddressBlock{"192.0.2.0/28", "198.51.100.10-198.51.100.20", "2001:db8::/64", "2001:db8:1::1 - 2001:db8:1::ff"},
		}},
		&v1beta1.L2Advertisement{ObjectMeta: meta("all")},
		&v1beta1.BGPAdvertisement{ObjectMeta: meta("agg"), Spec: v1beta1.BGPAdvertisementSpec{
			AggregationLength: i32(24), Communities: []string{"65535:65282", "large:1:2:3", "no-advertise"},
		}},
		&v1beta1.BGPPeer{ObjectMeta: meta("router"), Spec: v1beta1.BGPPeerSpec{
			MyASN: 64512, PeerASN: 4200000000, PeerAddress: "2001:db8::1",
			HoldTime: &metav1.Duration{Duration: 9e9}, KeepaliveTime: &metav1.Duration{Duration: 3e9},
		}},
		&v1beta1.Community{ObjectMeta: meta("aliases"), Spec: v1beta1.CommunitySpec{
			Communities: []v1beta1.CommunityAlias{{Name: "no-advertise", Value: "65535:65282"}},
		}},
		&v1beta1.BFDProfile{ObjectMeta: meta("fast"), Spec: v1beta1.BFDProfileSpec{ReceiveInterval: i32(100)}},
		&v1beta1.SpeakerStatus{ObjectMeta: meta("node-1")},
	}
	for _, obj := range valid {
		if err := c.Create(ctx, obj); err != nil {
			t.Errorf("valid %T %s rejected: %v", obj, obj.GetName(), err)
		}
	}
	pool := &v1beta1.IPAddressPool{}
	if err := c.Get(ctx, client.ObjectKey{Name: "mixed"}, pool); err != nil {
		t.Fatal(err)
	}
	if pool.Spec.AutoAssign == nil || !*pool.Spec.AutoAssign {
		t.Errorf("autoAssign should default to true, got %v", pool.Spec.AutoAssign)
	}
	bfd := &v1beta1.BFDProfile{}
	if err := c.Get(ctx, client.ObjectKey{Name: "fast"}, bfd); err != nil {
		t.Fatal(err)
	}
	if bfd.Spec.DetectMultiplier == nil || *bfd.Spec.DetectMultiplier != 3 {
		t.Errorf("detectMultiplier should default to 3, got %v", bfd.Spec.DetectMultiplier)
	}

	invalid := []struct {
		obj     client.Object
		message string // a part of the apiserver's answer a user can act on
	}{
		{&v1beta1.IPAddressPool{ObjectMeta: meta("empty")}, "spec.addresses"},
		{&v1beta1.IPAddressPool{ObjectMeta: meta("garbage"), Spec: v1beta1.IPAddressPoolSpec{
			Addresses: []v1beta1.AddressBlock{"192.0.2.0/24", "not-an-address"},
		}}, "must be a CIDR"},
		{&v1beta1.IPAddressPool{ObjectMeta: meta("mixed-range"), Spec: v1beta1.IPAddressPoolSpec{
			Addresses: []v1beta1.AddressBlock{"192.0.2.1-2001:db8::1"},
		}}, "a range of one family"},
		{&v1beta1.BGPPeer{ObjectMeta: meta("no-asn"), Spec: v1beta1.BGPPeerSpec{MyASN: 64512, PeerAddress: "192.0.2.1"}}, "exactly one of peerASN and dynamicASN"},
		{&v1beta1.BGPPeer{ObjectMeta: meta("big-asn"), Spec: v1beta1.BGPPeerSpec{MyASN: 1 << 32, PeerASN: 1, PeerAddress: "192.0.2.1"}}, "spec.myASN"},
		{&v1beta1.BGPPeer{ObjectMeta: meta("bad-addr"), Spec: v1beta1.BGPPeerSpec{MyASN: 1, PeerASN: 2, PeerAddress: "router.example"}}, "must be an IPv4 or IPv6 address"},
		{&v1beta1.BGPPeer{ObjectMeta: meta("v6-id"), Spec: v1beta1.BGPPeerSpec{MyASN: 1, PeerASN: 2, PeerAddress: "192.0.2.1", RouterID: "2001:db8::1"}}, "must be an IPv4 address"},
		{&v1beta1.BGPPeer{ObjectMeta: meta("two-passwords"), Spec: v1beta1.BGPPeerSpec{MyASN: 1, PeerASN: 2, PeerAddress: "192.0.2.1",
			Password: "x", PasswordSecret: &v1beta1.SecretReference{Name: "s"}}}, "password or passwordSecret"},
		{&v1beta1.BGPPeer{ObjectMeta: meta("slow-keepalive"), Spec: v1beta1.BGPPeerSpec{MyASN: 1, PeerASN: 2, PeerAddress: "192.0.2.1",
			HoldTime: &metav1.Duration{Duration: 3e9}, KeepaliveTime: &metav1.Duration{Duration: 3e9}}}, "keepaliveTime must be shorter"},
		{&v1beta1.BGPAdvertisement{ObjectMeta: meta("long-agg"), Spec: v1beta1.BGPAdvertisementSpec{AggregationLength: i32(33)}}, "spec.aggregationLength"},
		{&v1beta1.Community{ObjectMeta: meta("bad-community"), Spec: v1beta1.CommunitySpec{
			Communities: []v1beta1.CommunityAlias{{Name: "x", Value: "65535-1"}},
		}}, "spec.communities[0].value"},
		{&v1beta1.BFDProfile{ObjectMeta: meta("too-fast"), Spec: v1beta1.BFDProfileSpec{TransmitInterval: i32(1)}}, "spec.transmitInterval"},
	}
	for _, c2 := range invalid {
		err := c.Create(ctx, c2.obj)
		if err == nil {
			t.Errorf("invalid %T %s was accepted", c2.obj, c2.obj.GetName())
			continue
		}
		if !strings.Contains(err.Error(), c2.message) {
			t.Errorf("%s: the answer %q does not say %q", c2.obj.GetName(), err, c2.message)
		}
	}
}
