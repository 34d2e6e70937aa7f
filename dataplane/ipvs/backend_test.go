package ipvs

import (
	"context"
	"net/netip"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
	"sigs.k8s.io/knftables"
)

func newFakeBackend(t *testing.T, h *fakeHandle, links *fakeLinks, nft *knftables.Fake, sysctls fakeSysctls, state string) *Backend {
	t.Helper()
	b, err := New(Options{Handle: h, Links: links, NFT: nft, Sysctls: sysctls, SysctlStateFile: state, StrictARP: true})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestBackendCommitRestartCleanup(t *testing.T) {
	h := newFakeHandle()
	links := &fakeLinks{nodeAddrs: []netip.Addr{netip.MustParseAddr("192.168.0.5"), netip.MustParseAddr("2001:db8::5")}}
	nft := knftables.NewFake(knftables.InetFamily, TableName)
	sysctls := fakeSysctls{"net/ipv4/conf/all/arp_ignore": "0"}
	state := filepath.Join(t.TempDir(), "sysctls.json")
	ctx := context.Background()

	vip := netip.MustParseAddr("10.96.0.10")
	want := &desiredState{
		ServiceIPs:     map[netip.Addr]struct{}{vip: {}},
		VirtualServers: map[vsKey]*virtualServer{tcpKey("10.96.0.10", 80): {Scheduler: "rr", Reals: reals(1, "10.1.0.1:8080")}},
		NodePorts:      map[protoPort]*virtualServer{{Proto: unix.IPPROTO_TCP, Port: 30080}: {Scheduler: "rr", Reals: reals(1, "10.1.0.1:8080")}},
		Firewall:       firewallSets{},
	}
	want.Firewall.add(setServiceIPs+familySuffixIPv4, vip.String())
	b := newFakeBackend(t, h, links, nft, sysctls, state)
	if err := b.commit(ctx, want); err != nil {
		t.Fatal(err)
	}
	wantDump(t, h,
		"6:10.96.0.10:80 rr [10.1.0.1:8080 w1]",
		"6:192.168.0.5:30080 rr [10.1.0.1:8080 w1]",
		"6:[2001:db8::5]:30080 rr [10.1.0.1:8080 w1]")
	if !links.dummy[vip] || sysctls["net/ipv4/conf/all/arp_ignore"] != "1" {
		t.Fatalf("dummy %v, sysctls %v", links.dummy, sysctls)
	}

	// A restarted speaker adopts the kernel state: the same desired state sends nothing.
	h.resetCalls()
	restarted := newFakeBackend(t, h, links, nft, sysctls, state)
	if err := restarted.commit(ctx, want); err != nil {
		t.Fatal(err)
	}
	for call, n := range h.calls {
		if call != "GetServices" && call != "GetDestinations" && n > 0 {
			t.Fatalf("restart re-sent state: %v", h.calls)
		}
	}

	// The Service goes: its virtual servers and address go with it.
	if err := restarted.commit(ctx, &desiredState{Firewall: firewallSets{}}); err != nil {
		t.Fatal(err)
	}
	wantDump(t, h)
	if len(links.dummy) != 0 {
		t.Fatalf("dummy still holds %v", links.dummy)
	}

	// Cleanup from a fresh process removes what an earlier one made, sysctls included.
	if err := restarted.commit(ctx, want); err != nil {
		t.Fatal(err)
	}
	if err := newFakeBackend(t, h, links, nft, sysctls, state).Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	wantDump(t, h)
	if links.dummy != nil || nft.Table != nil || sysctls["net/ipv4/conf/all/arp_ignore"] != "0" {
		t.Fatalf("after cleanup: dummy %v, table %v, sysctls %v", links.dummy, nft.Table != nil, sysctls)
	}
}
