package speaker

import (
	"maps"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/heraldlb/herald/config"
	"github.com/heraldlb/herald/config/v1beta1"
)

func TestMembershipPeersLeaveOutStaleStatuses(t *testing.T) {
	now := time.Unix(10000, 0)
	status := func(name string, age time.Duration) v1beta1.SpeakerStatus {
		s := v1beta1.SpeakerStatus{ObjectMeta: metav1.ObjectMeta{Name: name}}
		if age >= 0 {
			at := metav1.NewTime(now.Add(-age))
			s.Status.LastUpdate = &at
		}
		return s
	}
	leased := func(s v1beta1.SpeakerStatus) v1beta1.SpeakerStatus {
		s.Labels = map[string]string{config.LabelSpeakerLease: "true"}
		return s
	}
	nodes := []corev1.Node{*node("a", nil, "10.0.0.1"), *node("b", nil, "10.0.0.2"), *node("c", nil, "10.0.0.3"), *node("d", nil, "10.0.0.4")}
	for _, tc := range []struct {
		name     string
		statuses []v1beta1.SpeakerStatus
		want     []string
	}{
		{"uninstalled from c: its status stopped being refreshed",
			[]v1beta1.SpeakerStatus{status("a", 0), status("b", 30*time.Second), status("c", StaleStatusAfter+time.Minute)}, []string{"a", "b"}},
		{"a refresh late by less than StaleStatusAfter still counts",
			[]v1beta1.SpeakerStatus{status("a", 0), status("b", StaleStatusAfter-time.Second)}, []string{"a", "b"}},
		{"API server unreachable for an hour: all equally old, all count",
			[]v1beta1.SpeakerStatus{status("a", time.Hour), status("b", time.Hour+time.Minute), status("c", time.Hour+30*time.Second)}, []string{"a", "b", "c"}},
		{"a status not written yet is a starting speaker",
			[]v1beta1.SpeakerStatus{status("a", 0), status("d", -1)}, []string{"a", "d"}},
		{"with a Lease, an old lastUpdate is a status that did not change: it counts, and is not the newest",
			[]v1beta1.SpeakerStatus{leased(status("a", time.Hour)), status("b", 0), status("c", 20*time.Minute)}, []string{"a", "b"}},
		{"upgraded: every speaker has a Lease, statuses of all ages count",
			[]v1beta1.SpeakerStatus{leased(status("a", 0)), leased(status("b", time.Hour)), leased(status("c", 24*time.Hour))}, []string{"a", "b", "c"}},
	} {
		got := slices.Sorted(maps.Keys(MembershipPeers(nodes, tc.statuses, 9652)))
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: peers %v, want %v", tc.name, got, tc.want)
		}
	}
}
