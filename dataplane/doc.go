// Package dataplane is Herald's embedded service proxy: it turns Services and EndpointSlices into
// a desired state (change trackers, a pure endpoint-selection policy), and hands that state to a
// Backend (dataplane/nftables, dataplane/ipvs) that commits it to the kernel in one transaction
// per sync, driven by a bounded-frequency runner.
//
// It also holds LocalEndpoints, the one view of which nodes have ready endpoints of which
// Service, shared by the announcers and the healthCheckNodePort servers.
package dataplane
