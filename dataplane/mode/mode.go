// Package mode decides which data-plane backend runs on a node, from the speaker's
// --dataplane flag (auto, ipvs, nftables, userspace, off) and what the node offers, and reports the decision
// in the log, as an event on the Node and as a metric.
package mode

import (
	"context"
	"fmt"
	"log/slog"
	"net"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	"sigs.k8s.io/knftables"
)

// Flag values and backend names.
const (
	Auto     = "auto"
	IPVS     = "ipvs"
	NFTables = "nftables"
	// Userspace serves every Service through the userspace proxy, with no kernel backend
	// (dataplane/userspace.Standalone): only for nodes where neither nftables nor IPVS can run,
	// so auto never picks it.
	Userspace = "userspace"
	Off       = "off"
)

// Backends are the backend names, as the herald_dataplane_backend metric lists them.
var Backends = []string{IPVS, NFTables, Userspace, Off}

// Probes are the facts Decide needs about the node; tests fake them.
type Probes struct {
	// KubeProxy reports whether kube-proxy's rules are on the node, and which ones it found.
	KubeProxy func(context.Context) (present bool, what string, err error)
	// IPVS returns nil when the kernel really has IPVS (dataplane/ipvs.Probe).
	IPVS func() error
}

// Decision is the backend to run and why.
type Decision struct {
	Backend string
	Reason  string
	// Fallback is set when auto wanted IPVS but the node cannot run it.
	Fallback bool
}

// Decide picks the backend. An explicit ipvs on a kernel without IPVS is an error: the operator
// asked for something the node cannot do, and silently running another proxy would hide it.
func Decide(ctx context.Context, flag string, p Probes) (Decision, error) {
	switch flag {
	case Off:
		return Decision{Backend: Off, Reason: "--dataplane=off: announcing only, kube-proxy forwards"}, nil
	case NFTables:
		return Decision{Backend: NFTables, Reason: "--dataplane=nftables"}, nil
	case Userspace:
		return Decision{Backend: Userspace, Reason: "--dataplane=userspace: every Service through the userspace proxy, no kernel backend"}, nil
	case IPVS:
		if err := p.IPVS(); err != nil {
			return Decision{}, fmt.Errorf("--dataplane=ipvs, but %w", err)
		}
		return Decision{Backend: IPVS, Reason: "--dataplane=ipvs"}, nil
	case Auto:
	default:
		return Decision{}, fmt.Errorf("--dataplane=%q: want auto, ipvs, nftables, userspace or off", flag)
	}
	present, what, err := p.KubeProxy(ctx)
	if err != nil {
		return Decision{}, fmt.Errorf("looking for kube-proxy's rules: %w", err)
	}
	if present {
		return Decision{Backend: Off, Reason: "kube-proxy's rules are on this node (" + what + "); never run two proxies"}, nil
	}
	if err := p.IPVS(); err != nil {
		return Decision{Backend: NFTables, Fallback: true, Reason: "IPVS unavailable (" + err.Error() + "); using nftables"}, nil
	}
	return Decision{Backend: IPVS, Reason: "the kernel has IPVS"}, nil
}

// Event reasons on the Node.
const (
	ReasonBackendSelected = "DataPlaneBackend"
	ReasonIPVSFallback    = "IPVSUnavailable"
)

// Metrics hold the herald_dataplane_backend gauge. The speaker registers it in its registry;
// NewMetrics(nil) makes it unregistered (tests, tools).
type Metrics struct {
	backend *prometheus.GaugeVec
}

// NewMetrics makes the gauge and registers it with reg unless it is nil.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{backend: prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "herald_dataplane_backend",
		Help: "1 for the data-plane backend this speaker runs (ipvs, nftables, userspace or off), 0 for the others.",
	}, []string{"backend"})}
	if reg != nil {
		reg.MustRegister(m.backend)
	}
	return m
}

// Report logs the decision, records it as an event on the Node (a Warning when auto had to fall
// back from IPVS) and sets the herald_dataplane_backend metric.
func Report(d Decision, log *slog.Logger, rec record.EventRecorder, nodeName string, metrics *Metrics) {
	for _, b := range Backends {
		v := 0.0
		if b == d.Backend {
			v = 1
		}
		metrics.backend.WithLabelValues(b).Set(v)
	}
	// Events on a Node reference it by name, with the UID convention kubelet uses (UID = name).
	node := &corev1.ObjectReference{Kind: "Node", Name: nodeName, UID: types.UID(nodeName)}
	if d.Fallback {
		log.Warn("falling back to nftables", "reason", d.Reason)
		rec.Event(node, corev1.EventTypeWarning, ReasonIPVSFallback, d.Reason)
		return
	}
	log.Info("backend selected", "backend", d.Backend, "reason", d.Reason)
	rec.Eventf(node, corev1.EventTypeNormal, ReasonBackendSelected, "data plane %s: %s", d.Backend, d.Reason)
}

// KubeProxyRules looks for kube-proxy's footprint in the caller's network namespace: its nftables
// tables (nftables mode), the KUBE-SERVICES chain in the ip nat table (iptables mode through
// iptables-nft) and the kube-ipvs0 link (IPVS mode).
func KubeProxyRules(ctx context.Context) (bool, string, error) {
	if _, err := net.InterfaceByName("kube-ipvs0"); err == nil {
		return true, "link kube-ipvs0", nil
	}
	for _, t := range []struct {
		family knftables.Family
		table  string
		chain  string // "" means any chain
	}{
		{knftables.IPv4Family, "kube-proxy", ""},
		{knftables.IPv6Family, "kube-proxy", ""},
		{knftables.IPv4Family, "nat", "KUBE-SERVICES"},
		{knftables.IPv6Family, "nat", "KUBE-SERVICES"},
	} {
		nft, err := knftables.New(t.family, t.table, knftables.NoObjectCommentEmulation)
		if err != nil {
			return false, "", err
		}
		chains, err := nft.List(ctx, "chain")
		if err != nil {
			if knftables.IsNotFound(err) {
				continue
			}
			return false, "", err
		}
		for _, c := range chains {
			if t.chain == "" || c == t.chain {
				return true, fmt.Sprintf("nftables table %s %s", t.family, t.table), nil
			}
		}
	}
	return false, "", nil
}
