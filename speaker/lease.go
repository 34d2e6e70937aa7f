package speaker

import (
	"context"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/heraldlb/herald/config"
)

// leaseLoop renews this node's speaker Lease (config.SpeakerLeaseName) every
// config.SpeakerLeaseRenew seconds until ctx ends: the readers of liveness (the controller's
// herald.io/Announced, heraldctl status) look at it, so the SpeakerStatus, which grows with the
// node's announcements, is written only when it changes. A failed renewal is retried a second
// later: three renewals' worth of failures are allowed before the Lease expires.
func (s *Speaker) leaseLoop(ctx context.Context) {
	var lease *coordinationv1.Lease
	for {
		next := time.Duration(config.SpeakerLeaseRenew) * time.Second
		renewed, err := s.renewLease(ctx, lease)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			s.log.Error("cannot renew the speaker Lease", "lease", s.cfg.LeaseNamespace+"/"+config.SpeakerLeaseName(s.cfg.NodeName), "err", err)
			next = time.Second
		}
		lease = renewed // nil after a failure: the next renewal reads it again
		select {
		case <-ctx.Done():
			return
		case <-time.After(next):
		}
	}
}

// renewLease writes a new renewTime into the Lease as last written (nil: read or created now).
func (s *Speaker) renewLease(ctx context.Context, last *coordinationv1.Lease) (*coordinationv1.Lease, error) {
	now := metav1.NewMicroTime(time.Now())
	if last == nil {
		var l coordinationv1.Lease
		key := client.ObjectKey{Namespace: s.cfg.LeaseNamespace, Name: config.SpeakerLeaseName(s.cfg.NodeName)}
		err := s.client.Get(ctx, key, &l)
		if apierrors.IsNotFound(err) {
			l = coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name,
				Labels: map[string]string{config.LabelSpeakerLease: "true"}, OwnerReferences: s.nodeOwner(ctx)},
				Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To(s.cfg.NodeName),
					LeaseDurationSeconds: ptr.To(int32(config.SpeakerLeaseDuration)), AcquireTime: &now, RenewTime: &now}}
			if err := s.client.Create(ctx, &l); err != nil {
				return nil, err
			}
			return &l, nil
		}
		if err != nil {
			return nil, err
		}
		last = &l
	}
	l := last.DeepCopy()
	if l.Labels == nil {
		l.Labels = map[string]string{}
	}
	l.Labels[config.LabelSpeakerLease] = "true"
	l.Spec.HolderIdentity = ptr.To(s.cfg.NodeName)
	l.Spec.LeaseDurationSeconds = ptr.To(int32(config.SpeakerLeaseDuration))
	l.Spec.RenewTime = &now
	if err := s.client.Update(ctx, l); err != nil {
		return nil, err
	}
	return l, nil
}

// nodeOwner makes this node's Node the owner of what the speaker creates for it (its
// SpeakerStatus, its Lease), so they go when the node does; none if the Node cannot be read.
func (s *Speaker) nodeOwner(ctx context.Context) []metav1.OwnerReference {
	var node corev1.Node
	if err := s.client.Get(ctx, client.ObjectKey{Name: s.cfg.NodeName}, &node); err != nil {
		return nil
	}
	return []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: node.Name, UID: node.UID}}
}
