package backendspec_test

import (
	"testing"

	"github.com/heraldlb/herald/dataplane/backendspec"
	"github.com/heraldlb/herald/dataplane/nftables"

	"github.com/heraldlb/herald/internal/testenv"
)

// TestSpecNFTables runs the backend spec against the nftables backend: on the build machine (SCTP
// skips there, its kernel has none) and inside the IPVS VM (with SCTP).
func TestSpecNFTables(t *testing.T) {
	if !backendspec.InNodeNetns() {
		testenv.Missing(t, "needs root and a private node network namespace")
	}
	backend, err := nftables.New()
	if err != nil {
		t.Fatalf("nftables backend: %v", err)
	}
	backendspec.Run(t, backendspec.NewProxyHarness(t, "node-1", backend))
}
