package mode

import (
	"context"
	"os"
	"os/exec"
	"testing"

	"github.com/heraldlb/herald/dataplane/backendspec"
	"github.com/heraldlb/herald/dataplane/ipvs"

	"github.com/heraldlb/herald/internal/testenv"
)

func TestMain(m *testing.M) { os.Exit(backendspec.RunInNodeNetns(m)) }

// TestKubeProxyRulesReal creates kube-proxy-like tables with the real nft in the test's private
// network namespace and checks they are found.
func TestKubeProxyRulesReal(t *testing.T) {
	if !backendspec.InNodeNetns() {
		testenv.Missing(t, "needs root for a private network namespace")
	}
	nft := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("nft", args...).CombinedOutput(); err != nil {
			t.Fatalf("nft %v: %v: %s", args, err, out)
		}
	}
	// The package's tests share the namespace: leave no kube-proxy footprint behind.
	t.Cleanup(func() {
		for _, table := range []string{"ip nat", "ip kube-proxy"} {
			_ = exec.Command("nft", "delete table "+table).Run()
		}
	})
	ctx := context.Background()
	if present, what, err := KubeProxyRules(ctx); err != nil || present {
		t.Fatalf("empty namespace: %v %q %v", present, what, err)
	}
	// An unrelated nat table is not kube-proxy.
	nft("add table ip nat; add chain ip nat POSTROUTING")
	if present, what, err := KubeProxyRules(ctx); err != nil || present {
		t.Fatalf("plain nat table: %v %q %v", present, what, err)
	}
	nft("add chain ip nat KUBE-SERVICES")
	if present, _, err := KubeProxyRules(ctx); err != nil || !present {
		t.Fatalf("iptables-mode kube-proxy not found: %v", err)
	}
	nft("delete table ip nat")
	nft("add table ip kube-proxy; add chain ip kube-proxy services")
	if present, _, err := KubeProxyRules(ctx); err != nil || !present {
		t.Fatalf("nftables-mode kube-proxy not found: %v", err)
	}
}

// TestAutoOnThisKernel decides with the real probes in a private namespace: IPVS inside the VM,
// whose kernel has ip_vs; on a kernel without it, nftables as a fallback.
func TestAutoOnThisKernel(t *testing.T) {
	if !backendspec.InNodeNetns() {
		testenv.Missing(t, "needs root for a private network namespace")
	}
	d, err := Decide(context.Background(), Auto, Probes{KubeProxy: KubeProxyRules, IPVS: ipvs.Probe})
	if err != nil {
		t.Fatal(err)
	}
	_, statErr := os.Stat("/proc/net/ip_vs") // exists once ip_vs is loaded, which the probe attempts
	want, fallback := IPVS, false
	if statErr != nil {
		want, fallback = NFTables, true
	}
	if os.Getenv("HERALD_IN_VM") == "1" && want != IPVS {
		t.Fatal("the VM's kernel has ip_vs, but /proc/net/ip_vs is missing after the probe")
	}
	if d.Backend != want || d.Fallback != fallback {
		t.Fatalf("auto chose %+v, want %s (fallback %v)", d, want, fallback)
	}
	t.Logf("auto: %s (%s)", d.Backend, d.Reason)
}
