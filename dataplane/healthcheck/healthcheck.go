// Package healthcheck serves what load balancers and kubelet ask a service proxy: one
// healthCheckNodePort listener per externalTrafficPolicy: Local Service, and the proxy's own
// /healthz and /livez (port 10256). Answers are byte for byte kube-proxy's (v1.34), so load
// balancers configured for kube-proxy work unchanged.
package healthcheck

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/heraldlb/herald/dataplane"
)

// ProxyHealthPort is kube-proxy's health port; Herald's data plane answers on it when it runs.
const ProxyHealthPort = 10256

// toBeDeletedTaint marks a node the cluster autoscaler is removing; /healthz then answers 503
// so load balancers drain it first (kube-proxy does the same).
const toBeDeletedTaint = "ToBeDeletedByClusterAutoscaler"

// ProxyHealth reports whether the proxy keeps up (see dataplane.Proxy.Health).
type ProxyHealth func() (healthy bool, lastUpdated time.Time)

// ServiceServers runs the healthCheckNodePort listeners. Each answers 200 when this node has at
// least one ready endpoint of its Service (from the shared LocalEndpoints view) and the proxy is
// healthy, else 503.
type ServiceServers struct {
	// Metrics counts the answers; nil counts nothing. Set it before the first Sync.
	Metrics *dataplane.Metrics

	node   string
	view   *dataplane.LocalEndpoints
	health ProxyHealth
	listen func(network, address string) (net.Listener, error)
	log    *slog.Logger

	mu      sync.Mutex
	servers map[types.NamespacedName]*serviceServer
	// binds are where the open listeners are bound (see Sync).
	binds []Bind
}

type serviceServer struct {
	port int32
	addr string // where its first listener listens
	srv  *http.Server
}

// Bind is where a healthCheckNodePort listener binds: a network ("tcp" for both families, "tcp4",
// "tcp6") and a host ("" for every address of the network).
type Bind struct{ Network, Host string }

// AllAddresses is one listener on every address of both families.
var AllAddresses = []Bind{{Network: "tcp"}}

// Binds are where kube-proxy v1.34 (pkg/proxy/healthcheck) opens a healthCheckNodePort: on the
// node addresses its --nodeport-addresses selects, those NodePorts are open on (np.Select of the
// node's addresses, given st's node IPs: nodeAddrs lists them, called only when np leaves some
// out), one listener each; a family np names no address of, on every address of it. A family
// with no selected address gets no listener (kube-proxy's too).
func Binds(np dataplane.NodePortAddresses, st *dataplane.State, nodeAddrs func() ([]netip.Addr, error)) ([]Bind, error) {
	if !np.Restricts(st) {
		return AllAddresses, nil
	}
	addrs, err := nodeAddrs()
	if err != nil {
		return nil, fmt.Errorf("listing the node's addresses: %w", err)
	}
	selected := np.Select(addrs, st)
	slices.SortFunc(selected, netip.Addr.Compare)
	var out []Bind
	for _, f := range []struct {
		ipv6    bool
		network string
	}{{false, "tcp4"}, {true, "tcp6"}} {
		if np.All(st, f.ipv6) {
			out = append(out, Bind{Network: f.network})
			continue
		}
		for _, a := range selected {
			if a.Is6() == f.ipv6 {
				out = append(out, Bind{Network: f.network, Host: a.String()})
			}
		}
	}
	return out, nil
}

// NewServiceServers returns the listeners' manager; listen opens a listener (nil: net.Listen).
func NewServiceServers(node string, view *dataplane.LocalEndpoints, health ProxyHealth, listen func(network, address string) (net.Listener, error), log *slog.Logger) *ServiceServers {
	if listen == nil {
		listen = net.Listen
	}
	if log == nil {
		log = slog.Default()
	}
	return &ServiceServers{node: node, view: view, health: health, listen: listen, log: log,
		servers: map[types.NamespacedName]*serviceServer{}}
}

// Ports lists the healthCheckNodePort of every Service in the state that has one.
func Ports(st *dataplane.State) map[types.NamespacedName]int32 {
	out := map[types.NamespacedName]int32{}
	for svc, ports := range st.Services {
		for _, p := range ports {
			if p.HealthCheckNodePort != 0 {
				out[svc] = p.HealthCheckNodePort
			}
		}
	}
	return out
}

// Sync opens listeners for new Services (or moved ports) on binds and closes the ones no longer
// wanted; when binds changed (the node's addresses did), every listener moves. A port that cannot
// be opened on all of binds is logged and retried at the next Sync.
func (s *ServiceServers) Sync(want map[types.NamespacedName]int32, binds []Bind) {
	s.mu.Lock()
	defer s.mu.Unlock()
	moved := !slices.Equal(binds, s.binds)
	s.binds = binds
	for svc, cur := range s.servers {
		if port, ok := want[svc]; !ok || port != cur.port || moved {
			cur.srv.Close()
			delete(s.servers, svc)
		}
	}
	for svc, port := range want {
		if _, ok := s.servers[svc]; ok {
			continue
		}
		var lns []net.Listener
		var err error
		for _, b := range binds {
			var ln net.Listener
			if ln, err = s.listen(b.Network, net.JoinHostPort(b.Host, strconv.Itoa(int(port)))); err != nil {
				break
			}
			lns = append(lns, ln)
		}
		if err != nil || len(lns) == 0 {
			for _, ln := range lns {
				ln.Close()
			}
			if err != nil {
				s.log.Error("healthCheckNodePort: cannot listen", "service", svc, "port", port, "error", err)
			}
			continue
		}
		srv := &http.Server{Handler: s.handler(svc), ReadHeaderTimeout: 5 * time.Second}
		for _, ln := range lns {
			go func() {
				// Sync's Close ends it with ErrServerClosed; anything else is the listener failing.
				if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
					s.log.Error("healthCheckNodePort: serving ended", "service", svc, "port", port, "addr", ln.Addr().String(), "error", err)
				}
			}()
		}
		s.servers[svc] = &serviceServer{port: port, addr: lns[0].Addr().String(), srv: srv}
	}
}

// Close stops every listener.
func (s *ServiceServers) Close() { s.Sync(nil, nil) }

func (s *ServiceServers) handler(svc types.NamespacedName) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		count := s.view.LocalReadyCount(svc, s.node)
		healthy, _ := s.health()
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("X-Load-Balancing-Endpoint-Weight", strconv.Itoa(count))
		code := http.StatusServiceUnavailable
		if count != 0 && healthy {
			code = http.StatusOK
		}
		w.WriteHeader(code)
		s.Metrics.HealthCheckAnswered(dataplane.HealthServerService, code)
		// kube-proxy's body: a dedented, tab-indented literal without a trailing newline.
		fmt.Fprintf(w, "{\n\t\"service\": {\n\t\t\"namespace\": %q,\n\t\t\"name\": %q\n\t},\n\t\"localEndpoints\": %d,\n\t\"serviceProxyHealthy\": %v\n}",
			svc.Namespace, svc.Name, count, healthy)
	})
}

// ProxyServer answers /healthz and /livez like kube-proxy's health server.
type ProxyServer struct {
	// Metrics counts the answers; nil counts nothing. Set it before serving.
	Metrics *dataplane.Metrics

	health ProxyHealth
	// node returns this node's object (nil while unknown); /healthz is 503 for a node being
	// deleted, so load balancers stop sending new connections before it goes.
	node func() *v1.Node
	now  func() time.Time
}

// NewProxyServer returns the /healthz and /livez handler.
func NewProxyServer(health ProxyHealth, node func() *v1.Node) *ProxyServer {
	return &ProxyServer{health: health, node: node, now: time.Now}
}

// proxyHealth is kube-proxy's JSON document.
type proxyHealth struct {
	LastUpdated  time.Time `json:"lastUpdated"`
	CurrentTime  time.Time `json:"currentTime"`
	NodeEligible *bool     `json:"nodeEligible,omitempty"`
	Healthy      bool      `json:"healthy"`
}

// Handler serves /healthz and /livez.
func (p *ProxyServer) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		eligible := p.nodeEligible()
		p.write(w, &eligible)
	})
	mux.HandleFunc("/livez", func(w http.ResponseWriter, _ *http.Request) { p.write(w, nil) })
	return mux
}

func (p *ProxyServer) write(w http.ResponseWriter, nodeEligible *bool) {
	healthy, last := p.health()
	h := proxyHealth{LastUpdated: last, CurrentTime: p.now(), NodeEligible: nodeEligible, Healthy: healthy}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	code := http.StatusServiceUnavailable
	if healthy && (nodeEligible == nil || *nodeEligible) {
		// As kube-proxy: a healthy proxy reports "now" (older releases' semantics).
		h.LastUpdated = h.CurrentTime
		code = http.StatusOK
	}
	w.WriteHeader(code)
	p.Metrics.HealthCheckAnswered(dataplane.HealthServerProxy, code)
	out, _ := json.Marshal(h)
	_, _ = w.Write(out) // a client gone mid-answer: nothing to do
}

func (p *ProxyServer) nodeEligible() bool {
	n := p.node()
	if n == nil || n.DeletionTimestamp != nil {
		return false
	}
	for _, t := range n.Spec.Taints {
		if t.Key == toBeDeletedTaint {
			return false
		}
	}
	return true
}

// Serve runs the proxy health server on addr until ctx ends.
func (p *ProxyServer) Serve(ctx context.Context, addr string) error {
	srv := &http.Server{Addr: addr, Handler: p.Handler(), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
