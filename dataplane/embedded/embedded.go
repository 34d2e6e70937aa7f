// Package embedded runs Herald's data plane inside the speaker: it picks the backend for
// --dataplane (dataplane/mode), feeds the service proxy from informers, and serves the proxy's
// health (:10256) and the healthCheckNodePort listeners. The speaker calls New, then Run; and
// Cleanup for --cleanup.
package embedded

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/record"

	"github.com/heraldlb/herald/config/v1beta1"
	"github.com/heraldlb/herald/dataplane"
	"github.com/heraldlb/herald/dataplane/healthcheck"
	"github.com/heraldlb/herald/dataplane/ipvs"
	"github.com/heraldlb/herald/dataplane/mode"
	"github.com/heraldlb/herald/dataplane/nftables"
	"github.com/heraldlb/herald/dataplane/userspace"
)

// Options configure the data plane.
type Options struct {
	NodeName string
	Client   kubernetes.Interface
	// LocalEndpoints is the speaker's view (already fed by its informers); the healthCheckNodePort
	// servers answer from it, so they agree with the announcers.
	LocalEndpoints *dataplane.LocalEndpoints
	Recorder       record.EventRecorder
	Logger         *slog.Logger
	// Registerer receives the data plane's metrics (the speaker's registry); nil: unregistered.
	Registerer prometheus.Registerer
	// HealthAddr is where /healthz and /livez are served; default ":10256".
	HealthAddr string
	// HealthTimeout is how long a change may wait for a sync before /healthz says unhealthy;
	// default 60 s (kube-proxy: twice its 30 s sync period).
	HealthTimeout time.Duration
	// ListenHealthCheck opens a healthCheckNodePort listener (healthcheck.Binds says where);
	// default net.Listen.
	ListenHealthCheck func(network, address string) (net.Listener, error)
	// ClusterCIDRs are the pods' addresses (--cluster-cidr): with them, traffic from outside
	// the cluster to a ClusterIP is masqueraded and pods' traffic to an externalTrafficPolicy:
	// Local address reaches any endpoint, as under kube-proxy with --cluster-cidr. Both kernel
	// backends (not the userspace data plane); nil: neither.
	ClusterCIDRs []netip.Prefix
	// MasqueradeAll masquerades all traffic to ClusterIPs (kube-proxy's --masquerade-all).
	// Both kernel backends.
	MasqueradeAll bool
	// NodePortAddresses are the node addresses NodePorts and the healthCheckNodePort listeners
	// are open on (--nodeport-addresses); the zero value: all of them.
	NodePortAddresses dataplane.NodePortAddresses
	// Services and EndpointSlices are informers the caller runs already (the speaker's cache);
	// the proxy then adds its handlers there instead of keeping a second copy of every Service
	// and EndpointSlice of the cluster. Nil: the data plane runs informers of its own.
	Services, EndpointSlices dataplane.EventHandlerRegistrar
}

// ReasonRepaired is the reason of the Warning event on the Node when the data plane found its
// kernel state changed behind its back and rewrote it.
const ReasonRepaired = "DataPlaneRepaired"

// DataPlane is the running data plane, or the decision not to run one.
type DataPlane struct {
	opts     Options
	decision mode.Decision
	backend  dataplane.Backend
	proxy    *dataplane.Proxy
	factory  informers.SharedInformerFactory
	nodes    informers.SharedInformerFactory
	// serviceCIDRs watches the ServiceCIDR objects; nil where the API server has none.
	serviceCIDRs informers.SharedInformerFactory
	checks       *healthcheck.ServiceServers
	// metrics record syncs, repairs and health-check answers (nil without a Registerer).
	metrics *dataplane.Metrics
	// userspace: see Backend.
	userspace *userspace.Proxy
	// earlierRules: see Backend.
	earlierRules bool
}

// earlierRulesReporter is a backend that can tell whether an earlier run's rules are in the kernel.
type earlierRulesReporter interface {
	HasEarlierRules(ctx context.Context) (bool, error)
}

var (
	_ earlierRulesReporter = (*nftables.Backend)(nil)
	_ earlierRulesReporter = (*ipvs.Backend)(nil)
)

// proxiedSelector skips Services another proxy claims and headless ones, as kube-proxy does.
const proxiedSelector = "!" + dataplane.LabelServiceProxyName + ",!" + dataplane.LabelServiceHeadless

// Backend is a decided data-plane backend, made and ready for New.
type Backend struct {
	Decision mode.Decision
	backend  dataplane.Backend
	// earlierRules is set when an earlier run's rules were in the kernel at the start.
	earlierRules bool
	// userspace is the userspace proxy for Services annotated herald.io/proxy-mode: userspace
	// (with --dataplane=userspace, for every Service).
	userspace *userspace.Proxy
	// nft and ipvs are the nftables or IPVS backend (nil with another), for the options New sets on it.
	nft  *nftables.Backend
	ipvs *ipvs.Backend
}

// Prepare decides the backend for --dataplane=modeName with the real probes (kube-proxy's
// rules, IPVS), makes it, and looks for an earlier run's rules. Each step runs nft or netlink:
// up to a second or two on a busy node, so the speaker starts it first, and it runs while the
// speaker connects to the API server and loads its caches.
func Prepare(ctx context.Context, modeName string, log *slog.Logger) (Backend, error) {
	log = log.With("component", "dataplane")
	decision, err := decide(ctx, modeName)
	if err != nil {
		return Backend{}, err
	}
	b := Backend{Decision: decision}
	switch decision.Backend {
	case mode.Off:
		return b, nil
	case mode.NFTables:
		var nft *nftables.Backend
		if nft, err = nftables.New(); err == nil {
			b.backend, b.nft = nft, nft
			b.userspace = userspace.New(userspace.Options{Logger: log})
			nft.SetUserspaceListeners(b.userspace)
		}
	case mode.Userspace:
		// No kernel backend: the proxy listens on the Service addresses and NodePorts itself.
		b.userspace = userspace.New(userspace.Options{Logger: log, Direct: true, ServeAll: true})
		b.backend, err = userspace.NewStandalone(b.userspace, userspace.StandaloneOptions{})
	case mode.IPVS:
		var vs *ipvs.Backend
		if vs, err = ipvs.New(ipvsOptions); err == nil {
			b.backend, b.ipvs = vs, vs
			// IPVS leaves a proxied port to local sockets: the proxy binds the Service's own
			// addresses (dataplane/ipvs/userspace.go).
			b.userspace = userspace.New(userspace.Options{Logger: log, Direct: true})
			vs.SetUserspaceListeners(b.userspace)
		}
	}
	if err != nil {
		return Backend{}, fmt.Errorf("%s backend: %w", decision.Backend, err)
	}
	if r, ok := b.backend.(earlierRulesReporter); ok {
		if b.earlierRules, err = r.HasEarlierRules(ctx); err != nil {
			// Then the node counts as fresh: the speaker announces after the first sync.
			log.Warn("could not tell whether an earlier run's rules are in place", "err", err)
		}
	}
	if b.userspace != nil && decision.Backend != mode.Userspace {
		b.backend = userspace.NewBackend(b.backend, b.userspace)
	}
	return b, nil
}

// New reports the decision in the log, as a Node event and as a metric, and sets up the proxy
// on the prepared backend. With the decision "off" nothing else is made and Run returns at once.
func New(ctx context.Context, b Backend, opts Options) (*DataPlane, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	opts.Logger = opts.Logger.With("component", "dataplane")
	if opts.HealthAddr == "" {
		opts.HealthAddr = ":" + strconv.Itoa(healthcheck.ProxyHealthPort)
	}
	if opts.HealthTimeout == 0 {
		opts.HealthTimeout = 60 * time.Second
	}
	if opts.Recorder != nil {
		mode.Report(b.Decision, opts.Logger, opts.Recorder, opts.NodeName, mode.NewMetrics(opts.Registerer))
	}
	d := &DataPlane{opts: opts, decision: b.Decision, backend: b.backend, earlierRules: b.earlierRules, userspace: b.userspace}
	if b.Decision.Backend == mode.Off {
		return d, nil
	}
	local := dataplane.LocalTraffic{ClusterCIDRs: opts.ClusterCIDRs, MasqueradeAll: opts.MasqueradeAll}
	switch {
	case b.nft != nil:
		b.nft.SetNodePortAddresses(opts.NodePortAddresses)
		b.nft.SetLocalTraffic(local)
	case b.ipvs != nil:
		b.ipvs.SetNodePortAddresses(opts.NodePortAddresses)
		b.ipvs.SetLocalTraffic(local)
	case len(opts.ClusterCIDRs) > 0 || opts.MasqueradeAll:
		opts.Logger.Info("the cluster CIDRs and masquerade-all apply to the kernel backends only; " + b.Decision.Backend + " ignores them")
	}
	if b.userspace != nil {
		// Where it binds NodePorts itself (--dataplane=userspace, and IPVS's userspace ports).
		b.userspace.SetNodePortAddresses(opts.NodePortAddresses)
	}

	services, slices := opts.Services, opts.EndpointSlices
	if services == nil || slices == nil {
		// What the proxy does not read is not kept (managed fields alone are a third of a
		// typical Service or EndpointSlice).
		d.factory = informers.NewSharedInformerFactoryWithOptions(opts.Client, 0,
			informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = proxiedSelector }),
			informers.WithTransform(dataplane.StripForProxy))
		services, slices = d.factory.Core().V1().Services().Informer(), d.factory.Discovery().V1().EndpointSlices().Informer()
	}
	d.nodes = informers.NewSharedInformerFactoryWithOptions(opts.Client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", opts.NodeName).String()
		}))
	if opts.Registerer != nil {
		var err error
		if d.metrics, err = dataplane.NewMetrics(opts.Registerer); err != nil {
			return nil, fmt.Errorf("data plane metrics: %w", err)
		}
		if d.userspace != nil {
			for _, c := range d.userspace.Collectors() {
				if err := opts.Registerer.Register(c); err != nil {
					return nil, fmt.Errorf("userspace proxy metrics: %w", err)
				}
			}
		}
	}
	d.checks = healthcheck.NewServiceServers(opts.NodeName, opts.LocalEndpoints, d.health, opts.ListenHealthCheck, opts.Logger)
	d.checks.Metrics = d.metrics
	d.proxy = dataplane.NewProxy(dataplane.ProxyOptions{
		NodeName:  opts.NodeName,
		Backend:   d.backend,
		Conntrack: dataplane.KernelConntrack{},
		OnSynced:  d.syncHealthChecks,
		OnRepair: func(what string) {
			if opts.Recorder != nil {
				node := &corev1.ObjectReference{Kind: "Node", Name: opts.NodeName, UID: types.UID(opts.NodeName)}
				opts.Recorder.Eventf(node, corev1.EventTypeWarning, ReasonRepaired,
					"the %s rules were changed by something else (%s); rewrote them all", d.backend.Name(), what)
			}
		},
		Metrics: d.metrics,
		Logger:  opts.Logger,
	})
	if err := d.proxy.Register(services, slices, d.nodes.Core().V1().Nodes().Informer()); err != nil {
		return nil, err
	}
	if hasServiceCIDRs(opts.Client, opts.Logger) {
		d.serviceCIDRs = informers.NewSharedInformerFactory(opts.Client, 0)
		if err := d.proxy.RegisterServiceCIDRs(d.serviceCIDRs.Networking().V1().ServiceCIDRs().Informer()); err != nil {
			return nil, err
		}
	}
	return d, nil
}

// hasServiceCIDRs reports whether the API server serves ServiceCIDR objects (networking.k8s.io/v1,
// Kubernetes 1.33 and later): without them the Service CIDRs are unknown and traffic to an
// unallocated address of them is not dropped. When it cannot tell, it assumes they are served
// (the proxy's first sync then waits for their list).
func hasServiceCIDRs(client kubernetes.Interface, log *slog.Logger) bool {
	res, err := client.Discovery().ServerResourcesForGroupVersion(networkingv1.SchemeGroupVersion.String())
	if err != nil && !apierrors.IsNotFound(err) {
		log.Warn("cannot tell whether the API server has ServiceCIDR objects; watching them", "err", err)
		return true
	}
	if err == nil && slices.ContainsFunc(res.APIResources, func(r metav1.APIResource) bool { return r.Name == "servicecidrs" }) {
		return true
	}
	log.Info("the API server has no ServiceCIDR objects (networking.k8s.io/v1): traffic to an unallocated Service address is not dropped")
	return false
}

// Backend is the backend that runs: "nftables", "ipvs" or "off".
func (d *DataPlane) Backend() string { return d.decision.Backend }

// Synced reports whether the data plane is off or has committed its first sync (which waits for
// its informers' first lists): the speaker's readiness.
func (d *DataPlane) Synced() bool {
	if d.proxy == nil {
		return true
	}
	_, last := d.proxy.Health(d.opts.HealthTimeout)
	return !last.IsZero()
}

// Forwards reports whether this node forwards Service traffic: the data plane is off (another
// proxy forwards), has committed its first sync, or found an earlier run's rules in the kernel
// (a restart: they keep forwarding until that sync replaces them). A node should not announce
// before: it would draw traffic it drops.
func (d *DataPlane) Forwards() bool { return d.earlierRules || d.Synced() }

// Status is the data plane's part of this node's SpeakerStatus.
func (d *DataPlane) Status() v1beta1.DataplaneStatus {
	st := v1beta1.DataplaneStatus{Backend: d.decision.Backend, Reason: d.decision.Reason}
	if d.proxy != nil {
		st.Services = int32(d.proxy.Services())
	}
	if d.userspace != nil {
		names := d.userspace.Services()
		st.UserspaceServicesTotal = int32(len(names))
		for _, n := range names[:min(len(names), v1beta1.MaxUserspaceServicesListed)] {
			st.UserspaceServices = append(st.UserspaceServices, n.String())
		}
	}
	return st
}

// Run runs the data plane until ctx ends. It leaves the rules in place on exit: connections
// keep flowing across a speaker restart, and the next start adopts or replaces them.
func (d *DataPlane) Run(ctx context.Context) error {
	if d.decision.Backend == mode.Off {
		return nil
	}
	if d.factory != nil {
		d.factory.Start(ctx.Done())
	}
	d.nodes.Start(ctx.Done())
	if d.serviceCIDRs != nil {
		d.serviceCIDRs.Start(ctx.Done())
	}
	defer d.checks.Close()
	if d.userspace != nil {
		// Its connections end with the speaker (the kernel's rules survive a restart, the
		// proxy's connections cannot).
		defer d.userspace.Close()
	}
	kernel := d.backend
	if u, ok := kernel.(*userspace.Backend); ok {
		kernel = u.Kernel() // the IPVS backend behind the userspace proxy still drains real servers
	}
	if b, ok := kernel.(*ipvs.Backend); ok {
		go b.RunReaper(ctx, 5*time.Second)
	}
	go func() {
		// Without its health port the data plane still forwards; say so and carry on.
		srv := healthcheck.NewProxyServer(d.health, d.node)
		srv.Metrics = d.metrics
		if err := srv.Serve(ctx, d.opts.HealthAddr); err != nil {
			d.opts.Logger.Error("proxy health server", "addr", d.opts.HealthAddr, "err", err)
		}
	}()
	d.proxy.Run(ctx)
	return nil
}

func (d *DataPlane) health() (bool, time.Time) { return d.proxy.Health(d.opts.HealthTimeout) }

// syncHealthChecks brings the healthCheckNodePort listeners in line with a synced state, on the
// node addresses --nodeport-addresses selects, as kube-proxy binds them.
func (d *DataPlane) syncHealthChecks(st *dataplane.State) {
	ports := healthcheck.Ports(st)
	if len(ports) == 0 {
		d.checks.Sync(nil, nil) // nothing to listen on: no need to list the node's addresses
		return
	}
	binds, err := healthcheck.Binds(d.opts.NodePortAddresses, st, func() ([]netip.Addr, error) {
		return dataplane.NodeAddrs(nil, ipvs.DummyLinkName)
	})
	if err != nil {
		// The listeners stay as they are; the next sync tries again.
		d.opts.Logger.Error("healthCheckNodePort listeners", "err", err)
		return
	}
	d.checks.Sync(ports, binds)
}

func (d *DataPlane) node() *corev1.Node {
	n, err := d.nodes.Core().V1().Nodes().Lister().Get(d.opts.NodeName)
	if err != nil {
		return nil
	}
	return n
}

// ipvsOptions are the IPVS backend's: strict ARP, so only the announcing node answers ARP for a
// Service IP even though every node holds it on herald-ipvs0.
var ipvsOptions = ipvs.Options{StrictARP: true}

func decide(ctx context.Context, modeName string) (mode.Decision, error) {
	return mode.Decide(ctx, modeName, mode.Probes{KubeProxy: mode.KubeProxyRules, IPVS: ipvs.Probe})
}

// PrepareSysctls decides the backend as New would and sets the sysctls it needs (IPVS's, and
// strict ARP for userspace), then returns: speaker --prepare-sysctls, the chart's privileged init step, so that the
// speaker itself runs unprivileged (/proc/sys is read-only there) and finds them set.
func PrepareSysctls(ctx context.Context, modeName string, log *slog.Logger) error {
	log = log.With("component", "dataplane")
	decision, err := decide(ctx, modeName)
	if err != nil {
		return err
	}
	switch decision.Backend {
	case mode.Userspace:
		// Its Service IPs are local routes on lo, as IPVS's are on herald-ipvs0.
		if err := ipvs.ApplyStrictARP(nil, ""); err != nil {
			return err
		}
		log.Info("strict-ARP sysctls for the userspace data plane set", "reason", decision.Reason)
		return nil
	case mode.IPVS:
	default:
		log.Info("no sysctls to set", "backend", decision.Backend, "reason", decision.Reason)
		return nil
	}
	if err := ipvs.ApplySysctls(ipvsOptions); err != nil {
		return err
	}
	log.Info("sysctls for IPVS set", "reason", decision.Reason)
	return nil
}

// Cleanup removes everything any backend made on this node (speaker --cleanup). The IPVS
// part runs only where the kernel has IPVS: elsewhere that backend can never have run.
func Cleanup(ctx context.Context, log *slog.Logger) error {
	log = log.With("component", "dataplane")
	var errs []error
	if nft, err := nftables.New(); err != nil {
		errs = append(errs, fmt.Errorf("nftables: %w", err))
	} else if err := nft.Cleanup(ctx); err != nil {
		errs = append(errs, fmt.Errorf("nftables cleanup: %w", err))
	}
	if err := ipvs.Probe(); err != nil {
		log.Info("cleanup: no IPVS in this kernel, nothing of it to remove", "reason", err)
	} else if b, err := ipvs.New(ipvs.Options{}); err != nil {
		errs = append(errs, fmt.Errorf("ipvs: %w", err))
	} else if err := b.Cleanup(ctx); err != nil {
		errs = append(errs, fmt.Errorf("ipvs cleanup: %w", err))
	}
	if err := userspace.CleanupStandalone(ctx); err != nil {
		errs = append(errs, fmt.Errorf("userspace cleanup: %w", err))
	}
	return errors.Join(errs...)
}
