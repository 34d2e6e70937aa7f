package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/heraldlb/herald/config"
	heraldscheme "github.com/heraldlb/herald/config/scheme"
	"github.com/heraldlb/herald/config/v1beta1"
	"github.com/heraldlb/herald/e2e/lab"
)

// The lab figures use the whole product: the real controller and speakers (bin/controller,
// bin/speaker with their embedded nftables data plane) on the lab's three nodes, Services written
// to the real API server, and the client on the segment opening TCP connections (one HTTP request
// each) to the Service IP. A reply counts only when it came through the node meant: the lab's
// Services have externalTrafficPolicy Cluster, so the backend sees the address of the node the
// connection entered by (masqueraded), which tells the old owner from the new one.

const (
	labPrefix    = "herald-l2bl-"
	labNamespace = "bench-l2"
	// attempt bounds one TCP connection + request: a SYN lost to a node that no longer forwards is
	// given up after this (the kernel would retransmit it only after 1 s).
	attempt = 100 * time.Millisecond
)

func runLab(dir string, trials int) error {
	ctx := context.Background()
	bin := filepath.Join(dir, "bin")
	for _, name := range []string{"speaker", "controller"} {
		if out, err := exec.Command("go", "build", "-o", filepath.Join(bin, name), "./cmd/"+name).CombinedOutput(); err != nil {
			return fmt.Errorf("building %s: %w\n%s", name, err, out)
		}
	}
	labDir := filepath.Join(dir, "lab")
	l, err := lab.Up(ctx, lab.Config{Dir: labDir, Prefix: labPrefix, BinDir: bin, CRDDir: filepath.Join("config", "crd")})
	defer func() { _ = lab.Down(context.Background(), labDir, labPrefix) }()
	if err != nil {
		return fmt.Errorf("lab up: %w", err)
	}
	cs, err := setUpL2(ctx, l)
	if err != nil {
		return err
	}

	// 1. Service created -> the client reaches it: ARP resolves to the new owner and a TCP
	// connection through its data plane is answered by a backend. The clock starts before the
	// create call; the lab writes the EndpointSlice right after it (it has no EndpointSlice
	// controller), the controller assigns the IP.
	nodes := l.Nodes()
	for _, n := range nodes { // the speakers start with the lab: let them join first
		if err := waitSettled(ctx, l, n); err != nil {
			return err
		}
	}
	var reached []time.Duration
	var ips []netip.Addr
	for i := range trials {
		ip := netip.AddrFrom4([4]byte{10, 77, 0, byte(200 + i)})
		m, err := timed(ctx, 30*time.Second, func(ctx context.Context) error {
			return createService(ctx, l, cs, fmt.Sprintf("s%d", i), ip)
		}, viaNode(l, ip, nil))
		if err != nil {
			return fmt.Errorf("service %d (%s): %w", i, ip, err)
		}
		reached = append(reached, m)
		ips = append(ips, ip)
	}
	report("L2 lab: Service created -> client reaches the IP (ARP + TCP + HTTP reply)", reached, "")

	// 2. Failover as the client sees it over TCP: from the owner's failure to the first reply that
	// came through another node. One Service, its owner failing in turn. The others go first:
	// with them, a node that returns would be handed some back (rebalancing), and a planned
	// handover of the measured IP in the middle of a trial would pass for a failover.
	ip := ips[0]
	for i := 1; i < trials; i++ {
		if err := cs.CoreV1().Services(labNamespace).Delete(ctx, fmt.Sprintf("s%d", i), metav1.DeleteOptions{}); err != nil {
			return err
		}
	}
	breakages := []struct {
		name         string
		break_, mend func(ctx context.Context, node string) error
	}{
		{"SIGKILL of the owner's speaker",
			func(_ context.Context, n string) error { return l.SignalSpeaker(n, syscall.SIGKILL) },
			func(ctx context.Context, n string) error { return l.StartSpeaker(ctx, n) }},
		{"carrier down on the owner's link", l.CutLink, func(ctx context.Context, n string) error {
			// Setting the bridge port's state right after bringing it up can meet it still down
			// ("Network is down"): try again for a moment.
			var err error
			for range 20 {
				if err = l.RestoreLink(ctx, n); err == nil {
					return nil
				}
				time.Sleep(100 * time.Millisecond)
			}
			return err
		}},
	}
	for _, b := range breakages {
		var took []time.Duration
		for range trials {
			old, err := answering(ctx, l, ip, nodes)
			if err != nil {
				return err
			}
			m, err := timed(ctx, 10*time.Second, func(ctx context.Context) error { return b.break_(ctx, old.Name) }, viaNode(l, ip, old))
			if err != nil {
				return fmt.Errorf("%s of %s: %w", b.name, old.Name, err)
			}
			took = append(took, m)
			if err := b.mend(ctx, old.Name); err != nil {
				return err
			}
			if err := waitSettled(ctx, l, old); err != nil {
				return err
			}
		}
		report("L2 lab failover, "+b.name+" -> first TCP reply through the new owner", took, "p50 < 300 ms, p99 < 1000 ms")
	}
	return nil
}

// waitSettled waits until node's speaker hears both peers with quorum (its metrics), then for the
// speaker's JoinGrace and Settle (2 s + 0.3 s): the next trial measures the failover of a settled
// cluster, not of one whose members are still joining.
func waitSettled(ctx context.Context, l *lab.Lab, node *lab.Host) error {
	hc, err := l.HTTPClient(lab.HostClient, time.Second)
	if err != nil {
		return err
	}
	url := "http://" + netip.AddrPortFrom(node.IPv4, 9651).String() + "/metrics"
	for end := time.Now().Add(30 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := hc.Do(req)
		if err != nil {
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if strings.Contains(string(body), "\nherald_membership_quorum 1\n") &&
			strings.Contains(string(body), fmt.Sprintf("\nherald_membership_peers_alive %d\n", len(l.Nodes())-1)) {
			time.Sleep(2500 * time.Millisecond)
			return nil
		}
	}
	return fmt.Errorf("%s's speaker did not rejoin its peers within 30 s", node.Name)
}

// setUpL2 creates the namespace, a pool of segment addresses and an L2Advertisement for it.
func setUpL2(ctx context.Context, l *lab.Lab) (kubernetes.Interface, error) {
	rc, err := l.RESTConfig()
	if err != nil {
		return nil, err
	}
	c, err := client.New(rc, client.Options{Scheme: heraldscheme.New()})
	if err != nil {
		return nil, err
	}
	pool := &v1beta1.IPAddressPool{ObjectMeta: metav1.ObjectMeta{Name: "bench-l2"},
		Spec: v1beta1.IPAddressPoolSpec{Addresses: []v1beta1.AddressBlock{lab.L2PoolV4}, AutoAssign: ptr.To(false)}}
	adv := &v1beta1.L2Advertisement{ObjectMeta: metav1.ObjectMeta{Name: "bench-l2"}}
	for _, obj := range []client.Object{pool, adv} {
		if err := c.Create(ctx, obj); err != nil {
			return nil, err
		}
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, err
	}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: labNamespace}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, err
	}
	return cs, nil
}

// createService creates a TCP LoadBalancer Service asking for ip, backed by every pod of the lab.
func createService(ctx context.Context, l *lab.Lab, cs kubernetes.Interface, name string, ip netip.Addr) error {
	svc := lab.LoadBalancerService(labNamespace, name)
	svc.Annotations = map[string]string{config.AnnotationLoadBalancerIPs: ip.String()}
	svc.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyCluster
	svc.Spec.IPFamilyPolicy = ptr.To(corev1.IPFamilyPolicySingleStack)
	svc.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv4Protocol}
	_, err := l.CreateBackendService(ctx, cs, svc, l.Pods())
	return err
}

// viaNode returns a probe that succeeds when a request to ip:80 from the client is answered
// through any node but not (nil: any node at all).
func viaNode(l *lab.Lab, ip netip.Addr, not *lab.Host) lab.Probe {
	target := netip.AddrPortFrom(ip, 80)
	return func(ctx context.Context) error {
		r, err := l.Get(ctx, lab.HostClient, target, attempt)
		if err != nil {
			return err
		}
		if not != nil && enteredBy(r.ClientIP(), not) {
			return fmt.Errorf("answered through %s", not.Name)
		}
		return nil
	}
}

// enteredBy reports whether a masqueraded source address is node's: its segment address, or its
// bridge address in its pod CIDR (for a backend on the same node).
func enteredBy(src netip.Addr, node *lab.Host) bool {
	if src == node.IPv4 {
		return true
	}
	for _, c := range node.PodCIDRs {
		if p, err := netip.ParsePrefix(c); err == nil && p.Contains(src) {
			return true
		}
	}
	return false
}

// answering returns the node whose MAC alone answers ARP for ip from the client.
func answering(ctx context.Context, l *lab.Lab, ip netip.Addr, nodes []*lab.Host) (*lab.Host, error) {
	var macs []string
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		var err error
		if macs, err = l.ResolveMACs(ctx, lab.HostClient, ip, 2); err != nil {
			return nil, err
		}
		if len(macs) == 1 {
			for _, n := range nodes {
				if strings.EqualFold(n.MAC, macs[0]) {
					return n, nil
				}
			}
		}
	}
	return nil, fmt.Errorf("%s resolves to %v, want exactly one node's MAC", ip, macs)
}

// timed runs event, then starts a probe every 5 ms, each in parallel with those still waiting,
// until one succeeds, and returns the time from the event's start to that success: the event is
// part of what is measured (a Service's create call, a signal). Overlapping probes keep a
// connection lost to a dead path (which waits out the 100 ms attempt) from hiding the moment a
// new connection would have succeeded.
func timed(ctx context.Context, limit time.Duration, event func(context.Context) error, probe lab.Probe) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	start := time.Now()
	if err := event(ctx); err != nil {
		return 0, err
	}
	succeeded := make(chan time.Duration, 1)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		go func() {
			if probe(ctx) == nil {
				select {
				case succeeded <- time.Since(start):
				default:
				}
			}
		}()
		select {
		case d := <-succeeded:
			return d, nil
		case <-ctx.Done():
			return 0, fmt.Errorf("no success within %v", limit)
		case <-tick.C:
		}
	}
}
