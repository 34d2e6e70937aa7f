package dataplane

import (
	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/meta"
)

// StripForProxy is the informer transform (client-go's cache.TransformFunc) of the caches that
// feed the data plane: the speaker's cache, shared by the proxy, the announcers and the
// local-endpoint view, and the data plane's own informers. Every object of a cluster's
// Services and EndpointSlices stays in memory for the life of the speaker, so what nobody reads
// is dropped as it arrives:
//   - managed fields, of every object (often a third of it);
//   - on Services, kubectl's last-applied-configuration annotation (a copy of the whole
//     object as last applied). The other annotations stay: herald.io/* and
//     metallb.universe.tf/* are read, and events name the Service by its metadata.
//   - on EndpointSlices, what neither the proxy nor the local-endpoint view reads: the UID,
//     annotations, owner references, generateName; per endpoint the hostname, the deprecated
//     topology and all of the targetRef but its UID (which identifies a pod across slices).
//
// Objects of other kinds, and tombstones, pass with their managed fields stripped or unchanged.
func StripForProxy(obj any) (any, error) {
	if m, err := meta.Accessor(obj); err == nil {
		m.SetManagedFields(nil)
	}
	switch o := obj.(type) {
	case *v1.Service:
		delete(o.Annotations, v1.LastAppliedConfigAnnotation)
	case *discoveryv1.EndpointSlice:
		o.UID, o.GenerateName = "", ""
		o.Annotations, o.OwnerReferences = nil, nil
		for i := range o.Endpoints {
			ep := &o.Endpoints[i]
			ep.Hostname, ep.DeprecatedTopology = nil, nil
			if ep.TargetRef != nil {
				if ep.TargetRef.UID == "" {
					ep.TargetRef = nil
				} else {
					*ep.TargetRef = v1.ObjectReference{UID: ep.TargetRef.UID}
				}
			}
		}
	}
	return obj, nil
}
