package speaker

import (
	"context"
	"maps"
	"net/netip"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/heraldlb/herald/config"
	"github.com/heraldlb/herald/config/v1beta1"
)

// StaleStatusAfter: a SpeakerStatus of a speaker without a Lease whose lastUpdate is this far
// behind the newest such one belongs to a speaker that is gone (uninstalled from its node, or the
// node is off): live speakers without a Lease rewrite theirs every minute. The controller deletes
// a speaker's SpeakerStatus and Lease once its Lease has been expired this long.
const StaleStatusAfter = 5 * time.Minute

// MembershipPeers lists the speakers this node exchanges heartbeats with, by node name, at the
// node's first InternalIP on port. A node counts as running a speaker once its speaker has written
// its SpeakerStatus (which is deleted with the Node): counting every Node would make nodes without
// a speaker (say, control-plane nodes) count as dead members and cost the cluster its quorum.
// For the same reason a stale status does not count (see StaleStatusAfter): a speaker removed
// from its node leaves its status behind. Staleness is measured against the newest status, not
// the clock, so that while the API server is unreachable (no status can be written) every member
// stays one and no node comes to believe it is alone.
func MembershipPeers(nodes []corev1.Node, statuses []v1beta1.SpeakerStatus, port uint16) map[string]netip.AddrPort {
	var newest time.Time
	for _, s := range statuses {
		if s.Labels[config.LabelSpeakerLease] != "true" && s.Status.LastUpdate != nil && s.Status.LastUpdate.After(newest) {
			newest = s.Status.LastUpdate.Time
		}
	}
	running := map[string]bool{}
	for _, s := range statuses {
		// A status not yet written (no lastUpdate) is a speaker starting: it counts. So does one
		// whose speaker renews a Lease (labelled config.LabelSpeakerLease): its lastUpdate is when
		// its content last changed, and the controller deletes it once the Lease has expired for
		// StaleStatusAfter (speakers do not watch the Leases: at 1,000 nodes each would receive
		// 100 renewals a second).
		running[s.Name] = s.Status.LastUpdate == nil || s.Labels[config.LabelSpeakerLease] == "true" ||
			newest.Sub(s.Status.LastUpdate.Time) <= StaleStatusAfter
	}
	out := map[string]netip.AddrPort{}
	for _, n := range nodes {
		if !running[n.Name] {
			continue
		}
		for _, a := range n.Status.Addresses {
			if a.Type != corev1.NodeInternalIP {
				continue
			}
			if ip, err := netip.ParseAddr(a.Address); err == nil {
				out[n.Name] = netip.AddrPortFrom(ip, port)
				break
			}
		}
	}
	return out
}

// WaitForAPI waits until the API server serves Herald's kinds. Helm creates the CRDs and the
// DaemonSet together, and an API server serves a new CRD a moment (seconds, when busy) after it
// exists: a speaker that gave up then would only be restarted after a crash-loop back-off.
func (s *Speaker) WaitForAPI(ctx context.Context) error {
	gvk := v1beta1.GroupVersion.WithKind("SpeakerStatus")
	for logged := false; ; {
		_, err := s.client.RESTMapper().RESTMapping(gvk.GroupKind(), gvk.Version)
		if err == nil || !meta.IsNoMatchError(err) {
			return err
		}
		if !logged {
			s.log.Info("waiting for the API server to serve Herald's CRDs", "err", err)
			logged = true
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// WatchPeers calls set with the membership peers once the caches hold them and whenever Nodes or
// SpeakerStatuses come, go, or change address; call before Run (it registers on the speaker's
// informers; Run runs the watch, and waits for it).
func (s *Speaker) WatchPeers(ctx context.Context, port uint16, set func(map[string]netip.AddrPort)) error {
	kick := make(chan struct{}, 1)
	handler := toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { signal(kick) },
		UpdateFunc: func(any, any) { signal(kick) },
		DeleteFunc: func(any) { signal(kick) },
	}
	for _, obj := range []client.Object{&corev1.Node{}, &v1beta1.SpeakerStatus{}} {
		inf, err := s.cache.GetInformer(ctx, obj)
		if err != nil {
			return err
		}
		if _, err := inf.AddEventHandler(handler); err != nil {
			return err
		}
	}
	s.watchPeers = func(ctx context.Context) {
		var last map[string]netip.AddrPort
		for {
			select {
			case <-ctx.Done():
				return
			case <-kick:
			}
			var nodes corev1.NodeList
			var statuses v1beta1.SpeakerStatusList
			if s.cache.List(ctx, &nodes, client.UnsafeDisableDeepCopy) != nil ||
				s.cache.List(ctx, &statuses, client.UnsafeDisableDeepCopy) != nil {
				continue
			}
			peers := MembershipPeers(nodes.Items, statuses.Items, port)
			if !maps.Equal(peers, last) {
				s.log.Info("membership peers", "peers", peers)
				set(peers)
				last = peers
			}
		}
	}
	return nil
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}
