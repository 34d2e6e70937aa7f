package speaker

import (
	"context"
	"testing"
	"time"

	apiextensionsclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/record"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/heraldlb/herald/config/v1beta1"
	"github.com/heraldlb/herald/internal/realapi"
)

// TestMarkerPrunedByAnOlderCRD: with the SpeakerStatus CRD of an older release (no bgpListing:
// Helm does not upgrade CRDs), the API server drops the marker from the speaker's write; the
// speaker notices from the answer and lists every BGP IP again (BGPListingPruned), so readers do
// not take its status for an older speaker's list that lacks them.
func TestMarkerPrunedByAnOlderCRD(t *testing.T) {
	api := realapi.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := api.Client(t)
	written := func(node string) *v1beta1.SpeakerStatus {
		t.Helper()
		var st v1beta1.SpeakerStatus
		if err := c.Get(ctx, client.ObjectKey{Name: node}, &st); err != nil {
			t.Fatal(err)
		}
		return &st
	}

	// The CRD as it is: the marker stays.
	marker := func(st *v1beta1.SpeakerStatusStatus) { st.BGPListing = v1beta1.BGPListingDeviations }
	current, err := New(Config{NodeName: "current", RestConfig: api.Config}, record.NewFakeRecorder(10))
	if err != nil {
		t.Fatal(err)
	}
	current.AddStatusSource(marker)
	if _, err := current.writeStatus(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if current.BGPListingPruned() || written("current").Status.BGPListing != v1beta1.BGPListingDeviations {
		t.Fatalf("with this release's CRD: pruned %v, status %+v", current.BGPListingPruned(), written("current").Status)
	}

	// The CRD of an older release: no bgpListing.
	crds := apiextensionsclient.NewForConfigOrDie(api.Config).ApiextensionsV1().CustomResourceDefinitions()
	crd, err := crds.Get(ctx, "speakerstatuses.herald.io", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range crd.Spec.Versions {
		delete(crd.Spec.Versions[i].Schema.OpenAPIV3Schema.Properties["status"].Properties, "bgpListing")
	}
	if _, err := crds.Update(ctx, crd, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The API server serves the new schema a moment later: until a probe's marker is dropped.
	probe := &v1beta1.SpeakerStatus{ObjectMeta: metav1.ObjectMeta{Name: "probe"}}
	if err := c.Create(ctx, probe); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		probe.Status.BGPListing = v1beta1.BGPListingDeviations
		if err := c.Status().Update(ctx, probe); err != nil {
			t.Fatal(err)
		}
		if probe.Status.BGPListing == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the API server still keeps bgpListing 30 s after the CRD lost it")
		}
	}

	older, err := New(Config{NodeName: "older-crd", RestConfig: api.Config}, record.NewFakeRecorder(10))
	if err != nil {
		t.Fatal(err)
	}
	older.AddStatusSource(marker)
	if _, err := older.writeStatus(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if !older.BGPListingPruned() {
		t.Error("the speaker did not notice that the API server dropped bgpListing")
	}
}
