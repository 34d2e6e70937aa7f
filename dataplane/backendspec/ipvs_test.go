package backendspec_test

import (
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	mobyipvs "github.com/moby/ipvs"
	"golang.org/x/sys/unix"

	"github.com/heraldlb/herald/dataplane/backendspec"
	"github.com/heraldlb/herald/dataplane/ipvs"
)

func TestMain(m *testing.M) { os.Exit(backendspec.RunInNodeNetns(m)) }

// ipvsHarness adds a view of the kernel's schedulers to the proxy harness.
type ipvsHarness struct {
	*backendspec.ProxyHarness
	h *mobyipvs.Handle
}

func (h ipvsHarness) Scheduler(t *testing.T, vip netip.AddrPort, protocol string) string {
	t.Helper()
	proto := map[string]uint16{backendspec.TCP: unix.IPPROTO_TCP, backendspec.UDP: unix.IPPROTO_UDP, backendspec.SCTP: unix.IPPROTO_SCTP}[protocol]
	svc, err := h.h.GetService(&mobyipvs.Service{Address: vip.Addr().AsSlice(), Port: vip.Port(), Protocol: proto,
		AddressFamily: unix.AF_INET})
	if err != nil {
		t.Fatalf("reading IPVS virtual server %s: %v", vip, err)
	}
	return svc.SchedName
}

// requireIPVS skips a test outside a private node namespace, and on a kernel without IPVS except in
// the VM (go run ./hack/ipvs-vm -test ./dataplane/backendspec), where it must run.
func requireIPVS(t *testing.T) {
	t.Helper()
	if !backendspec.InNodeNetns() {
		t.Skip("needs root and a private node network namespace")
	}
	if err := ipvs.Probe(); err != nil {
		if os.Getenv("HERALD_IN_VM") == "1" {
			t.Fatalf("IPVS probe failed inside the VM: %v", err)
		}
		t.Skipf("this kernel has no IPVS (%v): the VM runs this (go run ./hack/ipvs-vm -test ./dataplane/backendspec)", err)
	}
}

// TestSpecIPVS runs the backend spec against the IPVS backend. It needs a kernel with ip_vs: inside
// the VM (go run ./hack/ipvs-vm -test ./dataplane/backendspec) it must run; elsewhere it skips.
func TestSpecIPVS(t *testing.T) {
	requireIPVS(t)
	backend, err := ipvs.New(ipvs.Options{StrictARP: true, TerminationGrace: 30 * time.Second,
		SysctlStateFile: filepath.Join(t.TempDir(), "sysctls.json")})
	if err != nil {
		t.Fatal(err)
	}
	h, err := mobyipvs.New("")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	// Registered before the harness, so it runs after the backend's Cleanup: nothing may remain.
	t.Cleanup(func() {
		if svcs, err := h.GetServices(); err != nil || len(svcs) != 0 {
			t.Errorf("after cleanup: %d IPVS virtual servers (%v)", len(svcs), err)
		}
		if _, err := net.InterfaceByName(ipvs.DummyLinkName); err == nil {
			t.Errorf("after cleanup: link %s still exists", ipvs.DummyLinkName)
		}
		if out, err := exec.Command("nft", "list", "table", "inet", ipvs.TableName).CombinedOutput(); err == nil {
			t.Errorf("after cleanup: table %s still exists:\n%s", ipvs.TableName, out)
		}
	})
	backendspec.Run(t, ipvsHarness{ProxyHarness: backendspec.NewProxyHarness(t, "node-1", backend), h: h})
}
