// Command speaker runs on every node: membership, L2 (ARP/NDP), BGP and the data plane.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/client-go/kubernetes"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"
	crcache "sigs.k8s.io/controller-runtime/pkg/cache"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/heraldlb/herald/config"
	heraldscheme "github.com/heraldlb/herald/config/scheme"
	"github.com/heraldlb/herald/config/v1beta1"
	"github.com/heraldlb/herald/dataplane"
	"github.com/heraldlb/herald/dataplane/embedded"
	"github.com/heraldlb/herald/internal/health"
	"github.com/heraldlb/herald/speaker"
	"github.com/heraldlb/herald/speaker/bgp"
	"github.com/heraldlb/herald/speaker/l2"
	"github.com/heraldlb/herald/speaker/membership"
)

func main() {
	if err := run(); err != nil {
		slog.Error("speaker failed", "component", "speaker", "err", err)
		os.Exit(1)
	}
}

func run() (err error) {
	var (
		kubeconfig    = flag.String("kubeconfig", "", "kubeconfig file (default: in-cluster configuration)")
		nodeName      = flag.String("node-name", os.Getenv("NODE_NAME"), "this node's name (default $NODE_NAME)")
		secretFile    = flag.String("secret-file", "", "file holding the secret shared by all speakers; authenticates membership messages")
		dataplaneMode = flag.String("dataplane", "auto", "service proxy: auto, ipvs, nftables, userspace (every Service through the userspace proxy, for nodes where neither nftables nor IPVS can run; auto never picks it) or off")
		clusterCIDR   = flag.String("cluster-cidr", "", "the pods' CIDRs, comma-separated (as kube-proxy's --cluster-cidr): the data plane (nftables and IPVS) masquerades traffic from outside them to ClusterIPs, and sends pods' traffic to an externalTrafficPolicy: Local address to any endpoint")
		masqAll       = flag.Bool("masquerade-all", false, "the data plane (nftables and IPVS) masquerades all traffic to ClusterIPs (as kube-proxy's --masquerade-all)")
		nodePortAddrs = flag.String("nodeport-addresses", "primary", "the node addresses NodePorts and healthCheckNodePorts are open on, as kube-proxy's --nodeport-addresses: primary (the Node object's InternalIP of each family) or CIDRs, comma-separated; a family with no CIDR listed is open on all its addresses")
		metricsAddr   = flag.String("metrics-addr", ":9651", "address of /metrics and of the probes /healthz and /readyz")
		lbClass       = flag.String("lb-class", config.DefaultLoadBalancerClass, "spec.loadBalancerClass of the Services to announce (Services without a class are announced too)")
		cleanup       = flag.Bool("cleanup", false, "remove everything the speaker made on this node, then exit")
		prepare       = flag.Bool("prepare-sysctls", false, "set the sysctls the data plane chosen by --dataplane needs (IPVS), then exit: for a privileged init step, so the speaker itself needs no write access to /proc/sys")
		l2On          = flag.Bool("l2", true, "announce Service IPs with ARP/NDP (L2Advertisements); false: never answer ARP/NDP")
		bgpOn         = flag.Bool("bgp", true, "announce Service IPs to BGP peers (BGPAdvertisements, BGPPeers); false: no BGP session, nothing listens on TCP 179")
		restartHold   = flag.Duration("l2-restart-hold", 30*time.Second, "on SIGTERM (a restart, e.g. a rolling upgrade), how long the node's kernel keeps answering for its L2 addresses and the peers wait before taking them over; not when the node is leaving (cordoned or drained, excluded, NotReady, deleted): then they are handed over to the peers before the speaker stops. 0: hand them over always")
		detectAfter   = flag.Duration("failover-detect-after", 0, "how long a silent speaker is given before another node takes its L2 addresses over; heartbeats go every fifth of it (at least 100ms; 0: the built-in 250ms, heartbeats every 50ms)")
		logLevel      slog.Level
	)
	flag.TextVar(&logLevel, "log-level", slog.LevelInfo, "log level: debug, info, warn or error")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: logLevel}))
	slog.SetDefault(log)
	// The informer cache (controller-runtime, logr) and client-go (klog) log into the same
	// handler, so --log-level governs them too.
	ctrllog.SetLogger(logr.FromSlogHandler(log.Handler()))
	klog.SetSlogLogger(log)
	// The packages below name their own component; this file's messages are the speaker's.
	mainLog := log.With("component", "speaker")
	// The one registry served on --metrics-addr: every package registers its metrics here.
	registry := prometheus.NewRegistry()
	registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	switch *dataplaneMode {
	case "auto", "ipvs", "nftables", "userspace", "off":
	default:
		return fmt.Errorf("--dataplane=%q: want auto, ipvs, nftables, userspace or off", *dataplaneMode)
	}
	timing, err := failoverTiming(*detectAfter)
	if err != nil {
		return err
	}
	clusterCIDRs, err := parseCIDRs(*clusterCIDR)
	if err != nil {
		return fmt.Errorf("--cluster-cidr: %w", err)
	}
	nodePorts, err := dataplane.ParseNodePortAddresses(*nodePortAddrs)
	if err != nil {
		return fmt.Errorf("--nodeport-addresses: %w", err)
	}
	if *cleanup {
		// Membership keeps no state outside the process, and L2 only the addresses a restart
		// left held (they expire by themselves; removed here at once); the data plane's tables,
		// IPVS services, dummy link and sysctls are removed here too.
		if err := l2.ReleaseHeld(l2.NetlinkHandover{}); err != nil {
			return fmt.Errorf("cleanup: %w", err)
		}
		if err := embedded.Cleanup(context.Background(), log); err != nil {
			return fmt.Errorf("cleanup: %w", err)
		}
		mainLog.Info("cleanup done")
		return nil
	}
	if *prepare {
		if err := embedded.PrepareSysctls(context.Background(), *dataplaneMode, log); err != nil {
			return fmt.Errorf("prepare-sysctls: %w", err)
		}
		return nil
	}
	if *nodeName == "" {
		return errors.New("--node-name (or $NODE_NAME) is required")
	}
	secret, err := os.ReadFile(*secretFile)
	if err != nil {
		return fmt.Errorf("--secret-file: %w", err)
	}
	if secret = bytes.TrimSpace(secret); len(secret) < 16 {
		return errors.New("--secret-file: the shared secret must be at least 16 bytes")
	}
	restCfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		return fmt.Errorf("kubeconfig: %w", err)
	}

	signalled, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	defer func() {
		// A stop asked for by a signal is a clean exit at whatever step the speaker was (waiting
		// for the API, loading its caches): those steps end with their context's error.
		if signalled.Err() != nil && errors.Is(err, context.Canceled) {
			err = nil
		}
	}()
	// A failed membership ends everything below through this context (see heartbeats).
	ctx, endSpeaker := context.WithCancelCause(signalled)
	defer endSpeaker(nil)
	// Preparing the data-plane backend runs nft and netlink (up to a second or two on a busy
	// node) and the first announcement waits for the data plane, so it starts first and runs
	// while the speaker connects and loads its caches.
	var (
		backend    embedded.Backend
		backendErr error
		prepared   = make(chan struct{})
	)
	go func() {
		defer close(prepared)
		backend, backendErr = embedded.Prepare(ctx, *dataplaneMode, log)
	}()
	defer func() { endSpeaker(nil); <-prepared }()
	// Membership outlives the announcers by a moment at shutdown, so the peers hear "owns nothing"
	// and take over at once instead of after DeadAfter.
	memberCtx, stopMembership := context.WithCancel(context.Background())
	defer stopMembership()

	if err := membership.RaisePriority(membership.Nice); err != nil {
		mainLog.Warn("cannot raise its CPU priority (CAP_SYS_NICE); a saturated node may be declared dead", "err", err)
	}
	// Membership runs with L2 off too: it costs a few datagrams, it keeps MembersAlive in the
	// SpeakerStatus, and the uninstall hook waits for its port to be free (speaker gone).
	members, err := membership.New(membership.Config{
		Name: *nodeName, Key: membership.DeriveKey(secret),
		Listen: netip.AddrPortFrom(netip.IPv6Unspecified(), membership.Port), Logger: log,
		Metrics:  membership.NewMetrics(registry),
		Interval: timing.heartbeat, DeadAfter: timing.deadAfter,
		// Speakers starting together find each other through their SpeakerStatuses.
		JoinGrace: 2 * time.Second,
	})
	if err != nil {
		return err
	}
	hb := runHeartbeats(memberCtx, members.Run, log, endSpeaker)
	defer func() {
		stopMembership()
		hb.wait()
		// Whatever step the speaker was at, it ended because membership failed: say that.
		if merr := hb.ready(nil); merr != nil {
			err = merr
		}
	}()

	cs, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		return err
	}
	events := record.NewBroadcaster()
	events.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: cs.CoreV1().Events("")})
	defer events.Shutdown()
	recorder := events.NewRecorder(heraldscheme.New(), corev1.EventSource{Component: "herald-speaker", Host: *nodeName})

	// The one local-endpoint view of this node: announcers and the data plane share it.
	localEndpoints := dataplane.NewLocalEndpoints()
	// The data plane is set up once the speaker runs (below); until then it does not forward.
	var dataplaneRunning atomic.Pointer[embedded.DataPlane]
	spk, err := speaker.New(speaker.Config{
		NodeName: *nodeName, RestConfig: restCfg, LBClass: *lbClass, Logger: log, Endpoints: localEndpoints,
		LeaseNamespace: podNamespace(),
		MembersAlive:   func() int { return len(members.View().Alive) },
		DataplaneForwards: func() bool {
			dp := dataplaneRunning.Load()
			return dp != nil && dp.Forwards()
		},
	}, recorder)
	if err != nil {
		return err
	}
	if !*l2On {
		// A previous speaker with L2 on may have left its addresses held for a restart: this
		// one will not take them back, so the node stops answering for them now.
		if err := l2.ReleaseHeld(l2.NetlinkHandover{}); err != nil {
			mainLog.Error("cannot release the L2 addresses a previous speaker held; they expire with their hold", "err", err)
		}
	}
	if *l2On {
		spk.AddAnnouncer(speaker.NewL2(spk, l2.Config{Node: *nodeName, Membership: members, Links: l2.NetlinkLinks{},
			Timing: timing.election, Logger: log, Metrics: l2.NewMetrics(registry),
			RestartHold: *restartHold, Handover: l2.NetlinkHandover{}}))
	}
	if *bgpOn {
		// BGP: GoBGP in-process; passwordSecrets without a namespace are read from the speaker's own.
		bgpAnnouncer := speaker.NewBGP(spk, podNamespace(), bgp.Options{Logger: log})
		spk.AddAnnouncer(bgpAnnouncer)
		registry.MustRegister(bgpAnnouncer.Collector())
	}
	if err := spk.WaitForAPI(ctx); err != nil {
		return err
	}
	if err := spk.WatchPeers(ctx, membership.Port, members.SetPeers); err != nil {
		return err
	}
	// The speaker starts without waiting for the backend decision: the caches load and the BGP
	// sessions open meanwhile (a restarted speaker's routes are back that much sooner); the
	// first announcement waits until the data plane forwards.
	spk.AddStatusSource(func(st *v1beta1.SpeakerStatusStatus) {
		if dp := dataplaneRunning.Load(); dp != nil {
			st.Dataplane = dp.Status()
		}
	})
	var speakerErr error
	speakerDone := make(chan struct{})
	go func() { defer close(speakerDone); speakerErr = spk.Run(ctx) }()
	defer func() { endSpeaker(nil); <-speakerDone }()

	// The data plane (service proxy): decided by --dataplane, fed by the speaker's own Service
	// and EndpointSlice informers (one copy of each object; not waiting for them to sync), answering
	// health checks from the same local-endpoint view as the announcers.
	services, err := spk.Cache().GetInformer(ctx, &corev1.Service{}, crcache.BlockUntilSynced(false))
	if err != nil {
		return err
	}
	slices, err := spk.Cache().GetInformer(ctx, &discoveryv1.EndpointSlice{}, crcache.BlockUntilSynced(false))
	if err != nil {
		return err
	}
	<-prepared
	if backendErr != nil {
		return fmt.Errorf("dataplane: %w", backendErr)
	}
	dp, err := embedded.New(ctx, backend, embedded.Options{NodeName: *nodeName, Client: cs,
		LocalEndpoints: localEndpoints, Recorder: recorder, Logger: log, Registerer: registry,
		Services: services, EndpointSlices: slices, ClusterCIDRs: clusterCIDRs, MasqueradeAll: *masqAll,
		NodePortAddresses: nodePorts})
	if err != nil {
		return fmt.Errorf("dataplane: %w", err)
	}
	var background sync.WaitGroup // ends with ctx
	defer func() { endSpeaker(nil); background.Wait() }()
	background.Add(1)
	go func() {
		defer background.Done()
		if err := dp.Run(ctx); err != nil {
			mainLog.Error("data plane stopped", "err", err)
		}
	}()
	dataplaneRunning.Store(dp)
	spk.StatusChanged() // the SpeakerStatus names the backend now, not at the next minute's write
	mainLog.Info("starting", "node", *nodeName, "dataplane", dp.Backend(), "l2", *l2On, "bgp", *bgpOn,
		"heartbeat", timing.heartbeat, "failoverDetectAfter", timing.deadAfter)

	var cachesSynced atomic.Bool
	background.Add(1)
	go func() { defer background.Done(); cachesSynced.Store(spk.Cache().WaitForCacheSync(ctx)) }()
	go serveMetrics(*metricsAddr, registry, mainLog, health.Checks{
		"caches":     health.Condition(cachesSynced.Load, "the speaker's informer caches have not synced yet"),
		"dataplane":  health.Condition(dp.Synced, "the data plane has not programmed its first sync yet"),
		"membership": hb.ready,
	})
	<-speakerDone
	time.Sleep(100 * time.Millisecond)
	return speakerErr
}

// serveMetrics serves /metrics, and the kubelet's probes /healthz and /readyz, on addr.
func serveMetrics(addr string, metrics prometheus.Gatherer, log *slog.Logger, ready health.Checks) {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(metrics, promhttp.HandlerOpts{}))
	health.Handle(mux, ready)
	if err := http.ListenAndServe(addr, mux); err != nil {
		log.Error("metrics endpoint", "addr", addr, "err", err)
	}
}

// timing is the failover timing of --failover-detect-after: membership's heartbeat interval and
// dead time (zero: membership's defaults), and the L2 election's delays, which must outlast it.
type timing struct {
	heartbeat, deadAfter time.Duration
	election             l2.ElectionTiming
}

// minDetectAfter keeps heartbeats at 20 ms or slower.
const minDetectAfter = 100 * time.Millisecond

func failoverTiming(detectAfter time.Duration) (timing, error) {
	t := timing{election: l2.DefaultElectionTiming}
	switch {
	case detectAfter == 0:
		return t, nil
	case detectAfter < minDetectAfter:
		return t, fmt.Errorf("--failover-detect-after=%s: want at least %s (heartbeats go every fifth of it)", detectAfter, minDetectAfter)
	}
	// Five heartbeats per detection time, as membership's defaults (50 ms, 250 ms): one or two
	// lost datagrams never cost an ownership change.
	t.heartbeat, t.deadAfter = detectAfter/5, detectAfter
	// A node that gains quorum waits to hear every live peer's claims before taking orphaned
	// addresses: at least the dead time (l2.ElectionTiming.Settle).
	if settle := detectAfter + t.heartbeat; settle > t.election.Settle {
		t.election.Settle = settle
	}
	return t, nil
}

// podNamespace is the namespace the speaker runs in ($POD_NAMESPACE, from the downward API),
// herald-system by default.
func podNamespace() string {
	if ns := os.Getenv("POD_NAMESPACE"); ns != "" {
		return ns
	}
	return "herald-system"
}

// parseCIDRs parses a comma-separated list of CIDRs ("" is none).
func parseCIDRs(list string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range strings.Split(list, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, err
		}
		out = append(out, p.Masked())
	}
	return out, nil
}
