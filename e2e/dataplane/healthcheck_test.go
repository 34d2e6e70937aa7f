package dataplane_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/heraldlb/herald/dataplane"
	"github.com/heraldlb/herald/dataplane/healthcheck"
	"github.com/heraldlb/herald/e2e/lab"
	"github.com/heraldlb/herald/e2e/lab/labsuite"
)

// TestHealthCheckNodePortFollowsEndpoints: for an externalTrafficPolicy: Local Service, every
// node's healthCheckNodePort answers 200 when the node holds a ready endpoint and 503 when not,
// with kube-proxy's status line, headers and body; the rest of the node agrees (the IP is
// announced from a node that answers 200, a node answering 503 drops the NodePort, a node
// answering 200 serves it from its own endpoint); when the endpoints move, all of it follows.
func TestHealthCheckNodePortFollowsEndpoints(t *testing.T) {
	l := labsuite.Lab(t)
	cs, dyn := labsuite.Clients(t, l)
	l2Pool(t, dyn, "dpe-health", "10.77.0.236/32")
	nodes := l.Nodes()
	pods := podsOn(l, nodes[0].Name)
	svc := service(t, l, cs, "health", "10.77.0.236", pods, localPolicy)
	if svc.Spec.HealthCheckNodePort == 0 {
		t.Fatal("the apiserver allocated no healthCheckNodePort")
	}
	checkAnswers(t, l, cs, svc, pods)
	checkLocalServing(t, l, svc, pods)

	pods = podsOn(l, nodes[1].Name, nodes[2].Name)
	if err := l.SetEndpoints(context.Background(), cs, svc, pods); err != nil {
		t.Fatal(err)
	}
	checkAnswers(t, l, cs, svc, pods)
	checkLocalServing(t, l, svc, pods)
}

// checkAnswers waits until every node's healthCheckNodePort for svc, asked from the client,
// answers 200 if one of pods is behind it and 503 otherwise, each answer exactly the expected one.
func checkAnswers(t *testing.T, l *lab.Lab, cs kubernetes.Interface, svc *corev1.Service, pods []*lab.Host) {
	t.Helper()
	c, err := l.HTTPClient(lab.HostClient, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range l.Nodes() {
		wantCode := http.StatusServiceUnavailable
		for _, p := range pods {
			if p.Node == n.Name {
				wantCode = http.StatusOK
			}
		}
		url := "http://" + netip.AddrPortFrom(n.IPv4, uint16(svc.Spec.HealthCheckNodePort)).String() + "/"
		var got lab.HTTPAnswer
		took := labsuite.WaitFor(t, 30*time.Second, fmt.Sprintf("%s (%s) answering %d", url, n.Name, wantCode), func() (bool, string) {
			var err error
			got, err = lab.FetchHTTP(c, url)
			if err != nil {
				return false, err.Error()
			}
			want, err := expectedHealth(cs, svc, n.Name)
			if err != nil {
				return false, err.Error()
			}
			return got.Code == wantCode && got.String() == want.String(),
				fmt.Sprintf("node answers\n%s\nwant\n%s", got, want)
		})
		t.Logf("%s after %v: %s", n.Name, took.Round(time.Millisecond), got)
	}
}

// checkLocalServing waits until the node answering ARP for svc's LoadBalancer IP is one with an
// endpoint among pods, then checks every node's NodePort from the client: a node with an
// endpoint answers from one of its own, the others drop the connection (kube-proxy's Local policy).
func checkLocalServing(t *testing.T, l *lab.Lab, svc *corev1.Service, pods []*lab.Host) {
	t.Helper()
	ctx := context.Background()
	serving := map[string]bool{}
	for _, p := range pods {
		serving[p.Node] = true
	}
	ip := lbAddr(svc).Addr()
	labsuite.WaitFor(t, 30*time.Second, fmt.Sprintf("%s announced by a node with an endpoint", ip), func() (bool, string) {
		macs, err := l.ResolveMACs(ctx, lab.HostClient, ip, 2)
		if err != nil || len(macs) != 1 {
			return false, fmt.Sprint(macs, err)
		}
		h := l.HostByMAC(macs[0])
		return h != nil && serving[h.Name], fmt.Sprintf("answered by %s (%v)", macs[0], h)
	})
	for _, n := range l.Nodes() {
		addr := netip.AddrPortFrom(n.IPv4, uint16(svc.Spec.Ports[0].NodePort))
		if !serving[n.Name] {
			if got, err := connect(ctx, l, lab.HostClient, addr, 1500*time.Millisecond); got != unanswered {
				t.Errorf("NodePort %s of %s, which has no endpoint: %s (%v), want no answer (dropped)", addr, n.Name, got, err)
			}
			continue
		}
		if r, err := l.Get(ctx, lab.HostClient, addr, 2*time.Second); err != nil || r.Node != n.Name {
			t.Errorf("NodePort %s of %s: %+v %v, want an answer from one of %s's own endpoints", addr, n.Name, r, err, n.Name)
		}
	}
}

// expectedHealth is the answer node must give for svc given the Service's EndpointSlices as the
// apiserver holds them now. It comes from Herald's health-check server run here, on loopback, fed
// those slices: dataplane/healthcheck's TestSameAnswerAsKubeProxy holds that server byte for
// byte to the real kube-proxy v1.34 (status, headers, body), so the lab checks that each node's
// speaker gives that answer for its own endpoints, not a second copy of the format.
// The count in it is Herald's: distinct ready endpoints over all the Service's slices. The lab
// writes an IPv4 and an IPv6 slice without targetRef for each Service, so here a pod counts
// twice, where kube-proxy, which counts per IP family, would say 1.
func expectedHealth(cs kubernetes.Interface, svc *corev1.Service, node string) (lab.HTTPAnswer, error) {
	ctx := context.Background()
	slices, err := cs.DiscoveryV1().EndpointSlices(svc.Namespace).List(ctx, metav1.ListOptions{
		LabelSelector: discoveryv1.LabelServiceName + "=" + svc.Name})
	if err != nil {
		return lab.HTTPAnswer{}, err
	}
	view := dataplane.NewLocalEndpoints()
	for i := range slices.Items {
		view.OnEndpointSliceUpdate(&slices.Items[i])
	}
	var addr string
	servers := healthcheck.NewServiceServers(node, view, func() (bool, time.Time) { return true, time.Now() },
		func(string, string) (net.Listener, error) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err == nil {
				addr = ln.Addr().String()
			}
			return ln, err
		}, nil)
	defer servers.Close()
	servers.Sync(map[types.NamespacedName]int32{{Namespace: svc.Namespace, Name: svc.Name}: svc.Spec.HealthCheckNodePort}, healthcheck.AllAddresses)
	if addr == "" {
		return lab.HTTPAnswer{}, fmt.Errorf("the reference health-check server did not start")
	}
	return lab.FetchHTTP(http.DefaultClient, "http://"+addr+"/")
}
