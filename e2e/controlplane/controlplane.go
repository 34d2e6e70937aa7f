// Package controlplane runs a real Kubernetes control plane for tests and the lab: etcd,
// kube-apiserver and a kube-controller-manager limited to the controllers a cluster without kubelets
// needs. The binaries are the ones hack/k8s-bins.sh builds and caches.
//
// It runs on loopback (Address 127.0.0.1) or, through Config.Wrap and Config.Dial, inside a network
// namespace: the lab runs it inside herald-cp, where nothing in the machine's own namespace listens.
package controlplane

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	certutil "k8s.io/client-go/util/cert"
	"k8s.io/client-go/util/keyutil"

	"github.com/heraldlb/herald/e2e/proc"
)

// Versions of the cached binaries (see hack/k8s-bins.sh).
const (
	KubernetesVersion = "v1.34.4"
	EtcdVersion       = "v3.6.5"
)

// Binaries says where the cached kube-apiserver, kube-controller-manager, kubectl and etcd are.
type Binaries struct {
	KubeDir string // kube-apiserver, kube-controller-manager, kubectl; kubelet and kube-scheduler (hack/k8s-node-bins.sh)
	Etcd    string
}

// CachedBinaries returns the binaries hack/k8s-bins.sh leaves in ${HERALD_CACHE:-$HOME/.cache/herald},
// or an error telling how to build them.
func CachedBinaries() (Binaries, error) {
	return cached("kubectl", "kube-controller-manager")
}

// CachedAPIServer is CachedBinaries for a control plane of Config.APIServerOnly: it needs etcd and
// kube-apiserver only (the IPVS VM carries no more).
func CachedAPIServer() (Binaries, error) { return cached() }

// cached returns the cached binaries after checking that etcd, kube-apiserver and the named
// binaries of KubeDir are there.
func cached(more ...string) (Binaries, error) {
	cache := os.Getenv("HERALD_CACHE")
	if cache == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return Binaries{}, err
		}
		cache = filepath.Join(home, ".cache", "herald")
	}
	b := Binaries{
		KubeDir: filepath.Join(cache, "k8s-"+KubernetesVersion),
		Etcd:    filepath.Join(cache, "etcd-"+EtcdVersion, "etcd"),
	}
	need := []string{b.Etcd, filepath.Join(b.KubeDir, "kube-apiserver")}
	for _, m := range more {
		need = append(need, filepath.Join(b.KubeDir, m))
	}
	for _, p := range need {
		if _, err := os.Stat(p); err != nil {
			return Binaries{}, fmt.Errorf("%s missing: build the Kubernetes binaries once with hack/k8s-bins.sh", p)
		}
	}
	return b, nil
}

// Kubectl is the path of the cached kubectl.
func (b Binaries) Kubectl() string { return filepath.Join(b.KubeDir, "kubectl") }

// Config describes one control plane.
type Config struct {
	Dir      string // all state: etcd data, keys, kubeconfig, logs; emptied by Start
	Binaries Binaries
	// Address is where clients reach the apiserver (it also binds there unless BindAddress is set).
	Address     string
	BindAddress string
	Port        int // apiserver; default 6443
	EtcdPort    int // client port, peer port is EtcdPort+1; default 2379
	// ServiceCIDRs is the --service-cluster-ip-range (comma-separated, one per family).
	ServiceCIDRs string
	// NodePortRange is the --service-node-port-range, e.g. "20000-39999".
	NodePortRange string
	// Wrap turns a command line into the one actually run (e.g. prefixed by `ip netns exec NS`).
	Wrap func(argv []string) []string
	// Dial opens connections to the apiserver (e.g. from inside the namespace it runs in).
	Dial func(ctx context.Context, network, address string) (net.Conn, error)
	// RealNodes: the cluster's Nodes have kubelets (the lab's --kubelet mode). The control plane
	// then runs kube-scheduler and kube-controller-manager's default controllers (node lifecycle,
	// EndpointSlice, DaemonSet, Deployment, ...), and the apiserver reaches kubelets by address.
	RealNodes bool
	// APIServerOnly runs etcd and kube-apiserver only: no controller manager (nothing needs its
	// controllers when no Pods are made and no namespace is deleted; the differential test in the
	// IPVS VM, where every process costs under emulation).
	APIServerOnly bool
	// ReadyTimeout bounds the wait for the apiserver's /readyz; default 60 s (under the IPVS VM's
	// emulation it takes minutes).
	ReadyTimeout time.Duration
	// NodeMonitorGracePeriod (RealNodes): how long a Node may go without its kubelet's heartbeat
	// before the node lifecycle controller marks it NotReady; zero: Kubernetes' default.
	NodeMonitorGracePeriod time.Duration
}

// ControlPlane is a running control plane. Its fields are what the lab persists.
type ControlPlane struct {
	Kubeconfig string         `json:"kubeconfig"`
	Server     string         `json:"server"`
	Token      string         `json:"token"`
	CAFile     string         `json:"caFile"`
	Processes  []proc.Process `json:"processes"`
}

// Start writes keys and configuration into cfg.Dir, starts etcd, kube-apiserver and
// kube-controller-manager, and returns once the apiserver reports ready.
func Start(ctx context.Context, cfg Config) (_ *ControlPlane, err error) {
	if cfg.Port == 0 {
		cfg.Port = 6443
	}
	if cfg.EtcdPort == 0 {
		cfg.EtcdPort = 2379
	}
	if cfg.BindAddress == "" {
		cfg.BindAddress = cfg.Address
	}
	if cfg.Wrap == nil {
		cfg.Wrap = func(argv []string) []string { return argv }
	}
	if cfg.ReadyTimeout == 0 {
		cfg.ReadyTimeout = 60 * time.Second
	}
	if err := os.RemoveAll(cfg.Dir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, err
	}
	files, err := writeCredentials(cfg)
	if err != nil {
		return nil, err
	}
	cp := &ControlPlane{
		Kubeconfig: filepath.Join(cfg.Dir, "kubeconfig"),
		Server:     "https://" + net.JoinHostPort(cfg.Address, strconv.Itoa(cfg.Port)),
		Token:      files.token,
		CAFile:     files.cert,
	}
	if err := cp.writeKubeconfig(); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			cp.Stop()
		}
	}()

	etcdURL := "http://127.0.0.1:" + strconv.Itoa(cfg.EtcdPort)
	if err := cp.start(cfg, "etcd", cfg.Binaries.Etcd,
		"--data-dir="+filepath.Join(cfg.Dir, "etcd"),
		"--listen-client-urls="+etcdURL,
		"--advertise-client-urls="+etcdURL,
		"--listen-peer-urls=http://127.0.0.1:"+strconv.Itoa(cfg.EtcdPort+1),
		"--initial-advertise-peer-urls=http://127.0.0.1:"+strconv.Itoa(cfg.EtcdPort+1),
		"--initial-cluster=default=http://127.0.0.1:"+strconv.Itoa(cfg.EtcdPort+1),
		"--unsafe-no-fsync", // test data: durability across power loss buys nothing, fsync costs seconds
		"--log-level=warn",
	); err != nil {
		return nil, err
	}
	apiserverArgs := []string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=" + cfg.BindAddress,
		"--advertise-address=" + cfg.Address,
		"--secure-port=" + strconv.Itoa(cfg.Port),
		"--tls-cert-file=" + files.cert,
		"--tls-private-key-file=" + files.key,
		"--token-auth-file=" + files.tokens,
		"--authorization-mode=RBAC",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + files.saKey,
		"--service-account-signing-key-file=" + files.saKey,
		"--service-cluster-ip-range=" + cfg.ServiceCIDRs,
		"--service-node-port-range=" + cfg.NodePortRange,
		// Benchmarks create 10,000 Services quickly; the defaults (400/200) throttle them.
		"--max-requests-inflight=2000",
		"--max-mutating-requests-inflight=1000",
		"--profiling=false",
	}
	if cfg.RealNodes {
		apiserverArgs = append(apiserverArgs,
			// Node names do not resolve in the lab: logs, exec and port-forward go to the address.
			"--kubelet-preferred-address-types=InternalIP,ExternalIP,Hostname",
			// The chart's IPVS sysctl step and Kubernetes' e2e suite run privileged containers.
			"--allow-privileged=true")
	} else {
		// No kubelet ever clears the not-ready taint this plugin puts on new Nodes.
		apiserverArgs = append(apiserverArgs, "--disable-admission-plugins=TaintNodesByCondition")
	}
	if err := cp.start(cfg, "kube-apiserver", filepath.Join(cfg.Binaries.KubeDir, "kube-apiserver"), apiserverArgs...); err != nil {
		return nil, err
	}
	if err := cp.waitReady(ctx, cfg.Dial, cfg.ReadyTimeout); err != nil {
		return nil, err
	}
	if cfg.APIServerOnly {
		return cp, nil
	}
	kcmArgs := []string{
		"--kubeconfig=" + cp.Kubeconfig,
		"--service-account-private-key-file=" + files.saKey,
		"--use-service-account-credentials=false",
		"--leader-elect=false",
		"--secure-port=0",
	}
	if cfg.RealNodes {
		// Every default controller: node lifecycle (NotReady, taints), EndpointSlices from Pods,
		// DaemonSets, Deployments... Pods get the cluster CA in kube-root-ca.crt (the serving
		// certificate is its own CA). No node IPAM: the lab gives each Node its pod CIDRs.
		kcmArgs = append(kcmArgs, "--controllers=*", "--root-ca-file="+files.cert)
		if cfg.NodeMonitorGracePeriod > 0 {
			kcmArgs = append(kcmArgs, "--node-monitor-grace-period="+cfg.NodeMonitorGracePeriod.String(),
				"--node-monitor-period=1s")
		}
	} else {
		// The controllers a cluster needs even without kubelets: default ServiceAccounts, namespace
		// deletion, owner-reference garbage collection, aggregated ClusterRoles. Not the node
		// lifecycle controller (the lab's Nodes have no kubelet to heartbeat; the lab sets their
		// conditions), not the service/cloud controllers (Herald is the load balancer), not the
		// EndpointSlice controller (the lab writes the EndpointSlices of its backends, which are
		// not Pods).
		kcmArgs = append(kcmArgs, "--controllers=serviceaccount,namespace,garbagecollector,clusterrole-aggregation")
	}
	if err := cp.start(cfg, "kube-controller-manager", filepath.Join(cfg.Binaries.KubeDir, "kube-controller-manager"), kcmArgs...); err != nil {
		return nil, err
	}
	if cfg.RealNodes {
		if err := cp.start(cfg, "kube-scheduler", filepath.Join(cfg.Binaries.KubeDir, "kube-scheduler"),
			"--kubeconfig="+cp.Kubeconfig,
			"--authentication-kubeconfig="+cp.Kubeconfig,
			"--authorization-kubeconfig="+cp.Kubeconfig,
			"--leader-elect=false",
			"--secure-port=0",
		); err != nil {
			return nil, err
		}
	}
	return cp, nil
}

// Stop stops every process, the last started first.
func (cp *ControlPlane) Stop() {
	for i := len(cp.Processes) - 1; i >= 0; i-- {
		_ = cp.Processes[i].Stop(5 * time.Second)
	}
}

// RESTConfig returns a client configuration for the admin user, dialling through dial when set.
// QPS is high because tests and benchmarks create thousands of objects.
func (cp *ControlPlane) RESTConfig(dial func(ctx context.Context, network, address string) (net.Conn, error)) (*rest.Config, error) {
	ca, err := os.ReadFile(cp.CAFile)
	if err != nil {
		return nil, err
	}
	return &rest.Config{
		Host:            cp.Server,
		BearerToken:     cp.Token,
		TLSClientConfig: rest.TLSClientConfig{CAData: ca},
		Dial:            dial,
		QPS:             2000,
		Burst:           4000,
	}, nil
}

func (cp *ControlPlane) start(cfg Config, name, binary string, args ...string) error {
	p, err := proc.Start(name, cfg.Wrap(append([]string{binary}, args...)), filepath.Join(cfg.Dir, name+".log"), nil)
	if err != nil {
		return err
	}
	cp.Processes = append(cp.Processes, p)
	return nil
}

func (cp *ControlPlane) waitReady(ctx context.Context, dial func(ctx context.Context, network, address string) (net.Conn, error), timeout time.Duration) error {
	rc, err := cp.RESTConfig(dial)
	if err != nil {
		return err
	}
	rc.Timeout = 2 * time.Second
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		_, last = client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		if last == nil {
			return nil
		}
		for _, p := range cp.Processes {
			if !p.Alive() {
				return fmt.Errorf("%s exited:\n%s", p.Name, p.Tail(2000))
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kube-apiserver not ready: %w", last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

type credentialFiles struct {
	cert, key, saKey, tokens, token string
}

// writeCredentials writes a self-signed serving certificate (its CA is in the same file, which is
// what clients trust), the ServiceAccount signing key and a static admin token in system:masters.
func writeCredentials(cfg Config) (credentialFiles, error) {
	f := credentialFiles{
		cert:   filepath.Join(cfg.Dir, "apiserver.crt"),
		key:    filepath.Join(cfg.Dir, "apiserver.key"),
		saKey:  filepath.Join(cfg.Dir, "sa.key"),
		tokens: filepath.Join(cfg.Dir, "tokens.csv"),
	}
	ips := []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")}
	for _, cidr := range strings.Split(cfg.ServiceCIDRs, ",") {
		// The first address of each Service range is the `kubernetes` Service's ClusterIP.
		if _, n, err := net.ParseCIDR(cidr); err == nil {
			ip := n.IP
			ip[len(ip)-1]++
			ips = append(ips, ip)
		}
	}
	cert, key, err := certutil.GenerateSelfSignedCertKey(cfg.Address, ips,
		[]string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"})
	if err != nil {
		return f, err
	}
	saKey, err := keyutil.MakeEllipticPrivateKeyPEM()
	if err != nil {
		return f, err
	}
	raw := make([]byte, 16)
	if _, err := rand.Read(raw); err != nil {
		return f, err
	}
	f.token = hex.EncodeToString(raw)
	for path, data := range map[string][]byte{
		f.cert: cert, f.key: key, f.saKey: saKey,
		f.tokens: []byte(f.token + `,admin,admin,"system:masters"` + "\n"),
	} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			return f, err
		}
	}
	return f, nil
}

func (cp *ControlPlane) writeKubeconfig() error {
	kc := clientcmdapi.NewConfig()
	kc.Clusters["herald"] = &clientcmdapi.Cluster{Server: cp.Server, CertificateAuthority: cp.CAFile}
	kc.AuthInfos["admin"] = &clientcmdapi.AuthInfo{Token: cp.Token}
	kc.Contexts["herald"] = &clientcmdapi.Context{Cluster: "herald", AuthInfo: "admin"}
	kc.CurrentContext = "herald"
	return clientcmd.WriteToFile(*kc, cp.Kubeconfig)
}
