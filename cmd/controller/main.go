// Command controller gives Services of type LoadBalancer their addresses from IPAddressPools.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/heraldlb/herald/config"
	"github.com/heraldlb/herald/controller"
)

func main() {
	var cfg controller.Config
	flag.StringVar(&cfg.Kubeconfig, "kubeconfig", "", "kubeconfig file; empty uses the in-cluster ServiceAccount")
	flag.StringVar(&cfg.Mode, "mode", controller.ModeNative, "native, or cloud-provider (the upstream service controller with Herald as the cloud; class-less Services only)")
	flag.StringVar(&cfg.LoadBalancerClass, "lb-class", config.DefaultLoadBalancerClass, "spec.loadBalancerClass handled (native mode)")
	flag.BoolVar(&cfg.TakeClassless, "take-classless", true, "also handle Services without spec.loadBalancerClass (native mode)")
	flag.BoolVar(&cfg.LeaderElect, "leader-elect", true, "run only while holding the Lease, so several replicas are safe")
	flag.StringVar(&cfg.Namespace, "namespace", "herald-system", "namespace of the Lease")
	flag.StringVar(&cfg.MetricsAddr, "metrics-addr", ":9650", "address of /metrics and of the probes /healthz and /readyz; empty disables them")
	var logLevel slog.Level
	flag.TextVar(&logLevel, "log-level", slog.LevelInfo, "log level: debug, info, warn or error")
	flag.Parse()
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: logLevel}))
	// controller-runtime's health handlers log through logr: into the same handler.
	ctrllog.SetLogger(logr.FromSlogHandler(cfg.Logger.Handler()))
	cfg.Registry = prometheus.NewRegistry()
	cfg.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := controller.Main(ctx, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "controller:", err)
		os.Exit(1)
	}
}
