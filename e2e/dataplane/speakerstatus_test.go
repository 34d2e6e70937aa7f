package dataplane_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/heraldlb/herald/e2e/lab/labsuite"
)

// TestSpeakerStatusNamesTheBackend: every node's SpeakerStatus says which data plane runs there.
// The status is written when something changes and at least every minute; the backend is decided
// beside start-up, so a node that announces nothing may name it only at its next minute's write.
func TestSpeakerStatusNamesTheBackend(t *testing.T) {
	l := labsuite.Lab(t)
	_, dyn := labsuite.Clients(t, l)
	for _, n := range l.Nodes() {
		took := labsuite.WaitFor(t, 90*time.Second, "SpeakerStatus "+n.Name+" names the nftables data plane", func() (bool, string) {
			st, err := dyn.Resource(labsuite.HeraldResource("speakerstatuses")).Get(context.Background(), n.Name, metav1.GetOptions{})
			if err != nil {
				return false, err.Error()
			}
			backend, _, _ := unstructured.NestedString(st.Object, "status", "dataplane", "backend")
			return backend == "nftables", fmt.Sprintf("backend %q", backend)
		})
		t.Logf("SpeakerStatus %s named the backend after %v", n.Name, took.Round(time.Millisecond))
	}
}
