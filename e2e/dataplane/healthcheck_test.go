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
// with kube-proxy's status line, headers and body; when the endpoints move, the answers follow.
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

	pods = podsOn(l, nodes[1].Name, nodes[2].Name)
	if err := l.SetEndpoints(context.Background(), cs, svc, pods); err != nil {
		t.Fatal(err)
	}
	checkAnswers(t, l, cs, svc, pods)
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
		func(int32) (net.Listener, error) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err == nil {
				addr = ln.Addr().String()
			}
			return ln, err
		}, nil)
	defer servers.Close()
	servers.Sync(map[types.NamespacedName]int32{{Namespace: svc.Namespace, Name: svc.Name}: svc.Spec.HealthCheckNodePort})
	if addr == "" {
		return lab.HTTPAnswer{}, fmt.Errorf("the reference health-check server did not start")
	}
	return lab.FetchHTTP(http.DefaultClient, "http://"+addr+"/")
}
