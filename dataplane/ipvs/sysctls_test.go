package ipvs

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/heraldlb/herald/dataplane"
)

type fakeSysctls map[string]string

func (f fakeSysctls) Get(name string) (string, error) { return f[name], nil }
func (f fakeSysctls) Set(name, value string) error    { f[name] = value; return nil }

func TestSysctlsRestoredByALaterProcess(t *testing.T) {
	s := fakeSysctls{
		"net/ipv4/vs/conntrack": "0", "net/ipv4/vs/expire_nodest_conn": "0",
		"net/ipv4/vs/expire_quiescent_template": "0", "net/ipv4/ip_forward": "1",
		"net/ipv4/conf/all/arp_ignore": "0", "net/ipv4/conf/all/arp_announce": "0",
	}
	state := filepath.Join(t.TempDir(), "sysctls.json")
	k := &sysctlKeeper{s: s, stateFile: state}
	if err := k.apply(true); err != nil {
		t.Fatal(err)
	}
	if s["net/ipv4/conf/all/arp_ignore"] != "1" || s["net/ipv4/conf/all/arp_announce"] != "2" || s["net/ipv4/vs/conntrack"] != "1" {
		t.Fatalf("after apply: %v", s)
	}
	// Applying twice must not record our own values as "previous".
	if err := k.apply(true); err != nil {
		t.Fatal(err)
	}
	later := &sysctlKeeper{s: s, stateFile: state}
	if err := later.restore(); err != nil {
		t.Fatal(err)
	}
	want := fakeSysctls{
		"net/ipv4/vs/conntrack": "0", "net/ipv4/vs/expire_nodest_conn": "0",
		"net/ipv4/vs/expire_quiescent_template": "0", "net/ipv4/ip_forward": "1",
		"net/ipv4/conf/all/arp_ignore": "0", "net/ipv4/conf/all/arp_announce": "0",
	}
	for k, v := range want {
		if s[k] != v {
			t.Errorf("%s = %s after restore, want %s", k, s[k], v)
		}
	}
}

// readOnlySysctls is /proc/sys as an unprivileged container sees it.
type readOnlySysctls struct{ fakeSysctls }

func (readOnlySysctls) Set(name, _ string) error {
	return fmt.Errorf("%s: read-only file system", name)
}

// TestPreparedSysctlsNeedNoWrites: once ApplySysctls ran (the chart's privileged init step), the
// speaker's backend, with /proc/sys read-only, syncs without writing a sysctl; without it, the
// first sync fails and names the sysctl.
func TestPreparedSysctlsNeedNoWrites(t *testing.T) {
	k := newFakeKernel(t)
	sync := func() error {
		b, err := New(Options{Handle: k.h, Links: k.links, NFT: k.nft, Sysctls: readOnlySysctls{k.sysctls},
			SysctlStateFile: k.state, StrictARP: true})
		if err != nil {
			t.Fatal(err)
		}
		return b.Sync(context.Background(), dataplane.SyncRequest{State: stateOf(lbPort("web", 1, ep("10.1.0.1:8080"))), Full: true})
	}
	if err := sync(); err == nil || !strings.Contains(err.Error(), "arp_ignore") {
		t.Fatalf("sync on read-only sysctls before they were prepared: %v, want an error naming arp_ignore", err)
	}
	if err := ApplySysctls(Options{Sysctls: k.sysctls, SysctlStateFile: k.state, StrictARP: true}); err != nil {
		t.Fatal(err)
	}
	if k.sysctls["net/ipv4/conf/all/arp_ignore"] != "1" || k.sysctls["net/ipv4/vs/conntrack"] != "1" {
		t.Fatalf("after ApplySysctls: %v", k.sysctls)
	}
	if err := sync(); err != nil {
		t.Fatalf("sync on read-only sysctls after they were prepared: %v", err)
	}
}
