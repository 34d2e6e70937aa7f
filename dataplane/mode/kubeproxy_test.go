package mode

import (
	"context"
	"os"
	"os/exec"
	"testing"

	"github.com/heraldlb/herald/dataplane/backendspec"
)

func TestMain(m *testing.M) { os.Exit(backendspec.RunInNodeNetns(m)) }

// TestKubeProxyRulesReal creates kube-proxy-like tables with the real nft in the test's private
// network namespace and checks they are found.
func TestKubeProxyRulesReal(t *testing.T) {
	if !backendspec.InNodeNetns() {
		if os.Getenv("HERALD_REQUIRE_REAL") == "1" {
			t.Fatal("needs root for a private network namespace")
		}
		t.Skip("needs root for a private network namespace")
	}
	nft := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("nft", args...).CombinedOutput(); err != nil {
			t.Fatalf("nft %v: %v: %s", args, err, out)
		}
	}
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
