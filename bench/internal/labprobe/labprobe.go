// Package labprobe measures what a client on the e2e lab's segment sees: the whole product (the
// real controller and speakers on the lab's nodes) serving LoadBalancer Services, probed with TCP
// connections (one HTTP request each), and the figures printed as `BENCH {json}` lines for
// hack/bench.sh. A reply counts only when it came through the node meant: the Services have
// externalTrafficPolicy Cluster, so the backend sees the address of the node the connection
// entered by (masqueraded).
package labprobe

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strings"
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

// Attempt bounds one TCP connection + request: a SYN lost to a node that no longer forwards is
// given up after this (the kernel would retransmit it only after 1 s).
const Attempt = 100 * time.Millisecond

// Figure is one line of results.json.
type Figure struct {
	Figure  string  `json:"figure"`
	Value   float64 `json:"value"`
	Unit    string  `json:"unit"`
	Target  string  `json:"target,omitempty"`
	Command string  `json:"command"`
}

// WaitSettled waits until node's speaker hears both peers with quorum (its metrics), then for the
// speaker's JoinGrace and Settle (2 s + 0.3 s): the next trial measures the failover of a settled
// cluster, not of one whose members are still joining.
func WaitSettled(ctx context.Context, l *lab.Lab, node *lab.Host) error {
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

// SetUpL2 creates the namespace, and a pool of segment addresses and an L2Advertisement for it
// named as the namespace.
func SetUpL2(ctx context.Context, l *lab.Lab, namespace string) (kubernetes.Interface, error) {
	rc, err := l.RESTConfig()
	if err != nil {
		return nil, err
	}
	c, err := client.New(rc, client.Options{Scheme: heraldscheme.New()})
	if err != nil {
		return nil, err
	}
	pool := &v1beta1.IPAddressPool{ObjectMeta: metav1.ObjectMeta{Name: namespace},
		Spec: v1beta1.IPAddressPoolSpec{Addresses: []v1beta1.AddressBlock{lab.L2PoolV4}, AutoAssign: ptr.To(false)}}
	adv := &v1beta1.L2Advertisement{ObjectMeta: metav1.ObjectMeta{Name: namespace}}
	for _, obj := range []client.Object{pool, adv} {
		if err := c.Create(ctx, obj); err != nil {
			return nil, err
		}
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, err
	}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, err
	}
	return cs, nil
}

// CreateService creates a TCP LoadBalancer Service asking for ip, backed by every pod of the lab.
func CreateService(ctx context.Context, l *lab.Lab, cs kubernetes.Interface, namespace, name string, ip netip.Addr) error {
	svc := lab.LoadBalancerService(namespace, name)
	svc.Annotations = map[string]string{config.AnnotationLoadBalancerIPs: ip.String()}
	svc.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyCluster
	svc.Spec.IPFamilyPolicy = ptr.To(corev1.IPFamilyPolicySingleStack)
	svc.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv4Protocol}
	_, err := l.CreateBackendService(ctx, cs, svc, l.Pods())
	return err
}

// ViaNode returns a probe that succeeds when a request to ip:80 from the client is answered
// through any node but not (nil: any node at all).
func ViaNode(l *lab.Lab, ip netip.Addr, not *lab.Host) lab.Probe {
	target := netip.AddrPortFrom(ip, 80)
	return func(ctx context.Context) error {
		r, err := l.Get(ctx, lab.HostClient, target, Attempt)
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

// Answering returns the node whose MAC alone answers ARP for ip from the client.
func Answering(ctx context.Context, l *lab.Lab, ip netip.Addr, nodes []*lab.Host) (*lab.Host, error) {
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

// Timed runs event, then starts a probe every 5 ms, each in parallel with those still waiting,
// until one succeeds, and returns the time from the event's start to that success: the event is
// part of what is measured (a Service's create call, a signal). Overlapping probes keep a
// connection lost to a dead path (which waits out the 100 ms attempt) from hiding the moment a
// new connection would have succeeded.
func Timed(ctx context.Context, limit time.Duration, event func(context.Context) error, probe lab.Probe) (time.Duration, error) {
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

func Report(command, name string, d []time.Duration, target string) {
	slices.Sort(d)
	ms := func(x time.Duration) float64 { return float64(x.Microseconds()) / 1000 }
	rank := func(q float64) time.Duration { // nearest rank
		i := int(q*float64(len(d))+0.999999) - 1
		return d[max(0, min(i, len(d)-1))]
	}
	for _, f := range []Figure{
		{Figure: name + ", p50", Value: ms(rank(0.50)), Unit: "ms"},
		{Figure: name + ", p99", Value: ms(rank(0.99)), Unit: "ms"},
		{Figure: name + ", max", Value: ms(d[len(d)-1]), Unit: "ms"},
	} {
		f.Command = command
		if target != "" {
			f.Target = target
		}
		b, _ := json.Marshal(f)
		fmt.Printf("BENCH %s\n", b)
	}
	fmt.Fprintf(os.Stderr, "%s: %d trials, all: %v\n", name, len(d), d)
}
