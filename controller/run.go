package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/klog/v2"

	"github.com/heraldlb/herald/internal/health"
)

// Config is the controller binary's command line (docs/contracts.md).
type Config struct {
	Kubeconfig        string // empty: in-cluster ServiceAccount
	Mode              string // "native" or "cloud-provider"
	LoadBalancerClass string
	TakeClassless     bool
	LeaderElect       bool
	Namespace         string // of the Lease (events about a Service go to its own namespace)
	MetricsAddr       string
	// Registry is served on MetricsAddr; the binary makes it (with the Go runtime and process
	// collectors) and the controller registers its own metrics there. Nil: a new, empty one.
	Registry *prometheus.Registry
	Logger   *slog.Logger
}

// Modes of the controller.
const (
	ModeNative        = "native"
	ModeCloudProvider = "cloud-provider"
)

// Lease timing: a new leader takes over at most leaseDuration after the old one stopped renewing.
const (
	leaseName     = "herald-controller"
	leaseDuration = 10 * time.Second
	renewDeadline = 7 * time.Second
	retryPeriod   = 2 * time.Second
)

// Client rate: MetalLB's 20 QPS needs 100 s for 2,000 Services; the apiserver's own flow control
// (priority and fairness) is the limit that matters, so the client's is set far above it.
const (
	clientQPS   = 2000
	clientBurst = 4000
)

// Main runs the controller until ctx ends or leadership is lost.
func Main(ctx context.Context, cfg Config) error {
	if cfg.Mode != ModeNative && cfg.Mode != ModeCloudProvider {
		return fmt.Errorf("--mode must be %s or %s, not %q", ModeNative, ModeCloudProvider, cfg.Mode)
	}
	log := cfg.Logger
	klog.SetSlogLogger(log)
	rc, err := clientcmd.BuildConfigFromFlags("", cfg.Kubeconfig) // no kubeconfig: in-cluster
	if err != nil {
		return fmt.Errorf("kubeconfig: %w", err)
	}
	rc.QPS, rc.Burst = clientQPS, clientBurst
	rc.UserAgent = fieldManager
	// Protobuf for the built-in kinds: cheaper to encode for the apiserver and to decode for us.
	pb := rest.CopyConfig(rc)
	pb.ContentType = "application/vnd.kubernetes.protobuf"
	pb.AcceptContentTypes = "application/vnd.kubernetes.protobuf,application/json"
	client, err := kubernetes.NewForConfig(pb)
	if err != nil {
		return err
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}
	metrics := NewMetrics(cfg.Registry)
	// Readiness: the leader (or the only replica, without leader election) once its informers
	// have synced; a standby once it has seen the Lease, i.e. reached the apiserver. A standby
	// must be ready, or a rolling update of two replicas would wait for it forever.
	var leading atomic.Pointer[Controller]
	var leaseSeen atomic.Bool
	ready := func() bool {
		if c := leading.Load(); c != nil {
			return c.informersSynced()
		}
		return cfg.LeaderElect && leaseSeen.Load()
	}
	if cfg.MetricsAddr != "" {
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(cfg.Registry, promhttp.HandlerOpts{}))
		health.Handle(mux, health.Checks{"informers": health.Condition(ready,
			"leading, and the informers have not synced yet; or standby, and the Lease has not been seen yet")})
		srv := &http.Server{Addr: cfg.MetricsAddr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go func() {
			if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("metrics server", "addr", cfg.MetricsAddr, "err", err)
			}
		}()
		defer srv.Close()
	}
	opts := Options{LoadBalancerClass: cfg.LoadBalancerClass, TakeClassless: cfg.TakeClassless, Logger: log, Metrics: metrics,
		SecretNamespace: cfg.Namespace}
	run := func(ctx context.Context) error {
		c, err := New(client, rc, opts) // Herald's kinds are CRDs: JSON only
		if err != nil {
			return err
		}
		leading.Store(c)
		if cfg.Mode == ModeCloudProvider {
			return c.RunCloudProvider(ctx)
		}
		return c.Run(ctx)
	}
	if !cfg.LeaderElect {
		return run(ctx)
	}
	host, _ := os.Hostname()
	id := host + "_" + uuid.NewString()
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Name: leaseName, Namespace: cfg.Namespace},
		Client:     client.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: id},
	}
	var runErr error
	var led atomic.Bool
	lost, ran := make(chan struct{}), make(chan struct{})
	le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock: lock, LeaseDuration: leaseDuration, RenewDeadline: renewDeadline, RetryPeriod: retryPeriod,
		ReleaseOnCancel: true, Name: leaseName,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(ctx context.Context) {
				led.Store(true)
				defer close(ran)
				log.Info("became leader", "identity", id)
				runErr = run(ctx)
			},
			OnStoppedLeading: func() { close(lost) },
			OnNewLeader: func(leader string) {
				leaseSeen.Store(true)
				if leader != id {
					log.Info("waiting: another replica leads", "leader", leader)
				}
			},
		},
	})
	if err != nil {
		return err
	}
	log.Info("waiting for leadership", "lease", cfg.Namespace+"/"+leaseName, "identity", id)
	le.Run(ctx)
	<-lost
	if led.Load() {
		<-ran // the controller's context is cancelled; let it finish before reading its error
	}
	if runErr != nil {
		return runErr
	}
	if ctx.Err() == nil {
		return errors.New("lost leadership")
	}
	return nil
}

// informersSynced: the controller's informers hold their first complete lists.
func (c *Controller) informersSynced() bool {
	return c.svcInf.HasSynced() && c.poolsSynced.Load() && c.factory.Core().V1().Namespaces().Informer().HasSynced()
}
