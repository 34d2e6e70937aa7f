package ipvs

import (
	"bufio"
	"context"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/heraldlb/herald/dataplane"
	"github.com/heraldlb/herald/dataplane/backendspec"
)

// nodeRequest is one TCP request from the node itself (the test process runs in the node
// namespace): the answering backend and the source it saw.
func nodeRequest(dst netip.AddrPort) (backend, source string, err error) {
	c, err := net.DialTimeout("tcp", dst.String(), 2*time.Second)
	if err != nil {
		return "", "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", "", err
	}
	backend, source, _ = strings.Cut(strings.TrimSpace(line), " ")
	return backend, source, nil
}

// TestLocalTrafficWithRealPackets (issue 16 items 3 and 4, IPVS): with the cluster CIDRs
// 10.1.0.0/16 and fd01::/16 (the backends' addresses), a client off the cluster reaching a
// ClusterIP is masqueraded and a pod keeps its address; the node's own connections to a
// ClusterIP are masqueraded (IPv4: not sent with the ClusterIP as their source; IPv6: the
// endpoint sees the node's address on its link); a pod reaching the LoadBalancer IP of an
// externalTrafficPolicy: Local Service without a local endpoint, and the node reaching its
// NodePort or LoadBalancer IP, are answered by the Service's endpoints elsewhere (the pod
// keeping its address), while the client off the cluster is still dropped there. Then with
// masquerade-all, the pod's connection to the ClusterIP is masqueraded too. In the IPVS VM
// (make test-ipvs).
func TestLocalTrafficWithRealPackets(t *testing.T) {
	h, links, nft := kernelParts(t)
	top := backendspec.NewTopology(t, 3)
	for _, be := range top.Backends {
		be.Serve(t, backendspec.TCP, 8080)
	}
	pod, elsewhere := top.Backends[0], top.Backends[1:]
	endpoints := func(hosts ...*backendspec.Host) []dataplane.Endpoint {
		var eps []dataplane.Endpoint
		for _, be := range hosts {
			eps = append(eps, dataplane.Endpoint{Addr: be.Addrs[0], Port: 8080, Ready: true, Serving: true})
		}
		return eps
	}
	port := func(name, clusterIP, lbIP string, nodePort int32) *dataplane.ServicePort {
		return &dataplane.ServicePort{
			Name:     dataplane.ServicePortName{NamespacedName: types.NamespacedName{Namespace: "ns", Name: name}, Protocol: v1.ProtocolTCP},
			Protocol: v1.ProtocolTCP, Port: 80, NodePort: nodePort,
			ClusterIPs:      []netip.Addr{netip.MustParseAddr(clusterIP)},
			LoadBalancerIPs: []netip.Addr{netip.MustParseAddr(lbIP)},
			HasEndpoints:    true,
		}
	}
	cluster := port("cluster", "10.96.0.21", "10.255.0.21", 30021)
	cluster.ClusterEndpoints, cluster.ExternalEndpoints = endpoints(elsewhere[0]), endpoints(elsewhere[0])
	local := port("local", "10.96.0.22", "10.255.0.22", 30022)
	local.ExternalPolicyLocal = true
	local.ClusterEndpoints, local.ShortCircuitEndpoints = endpoints(elsewhere...), endpoints(elsewhere...)
	// ExternalEndpoints stays empty: the Service's endpoints run on other nodes.
	cluster6 := port("cluster6", "fd00:96::21", "fd00:255::21", 30023)
	ep6 := dataplane.Endpoint{Addr: elsewhere[0].Addrs6[0], Port: 8080, Ready: true, Serving: true}
	cluster6.ClusterEndpoints, cluster6.ExternalEndpoints = []dataplane.Endpoint{ep6}, []dataplane.Endpoint{ep6}
	state := stateOf(cluster, local, cluster6)

	newBackend := func(lt dataplane.LocalTraffic) *Backend {
		b, err := New(Options{Handle: h, Links: links, NFT: nft, Sysctls: ProcSysctls{},
			SysctlStateFile: filepath.Join(t.TempDir(), "sysctls.json"), StrictARP: true})
		if err != nil {
			t.Fatal(err)
		}
		b.SetLocalTraffic(lt)
		if err := b.Sync(context.Background(), dataplane.SyncRequest{State: state, Full: true}); err != nil {
			t.Fatal(err)
		}
		return b
	}
	b := newBackend(dataplane.LocalTraffic{ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16"), netip.MustParsePrefix("fd01::/16")}})
	t.Cleanup(func() { _ = b.Cleanup(context.Background()) })

	clusterIP := netip.MustParseAddrPort("10.96.0.21:80")
	if r, err := top.Client.Request(backendspec.TCP, netip.Addr{}, clusterIP); err != nil {
		t.Errorf("the client off the cluster to the ClusterIP: %v", err)
	} else if r.Source == top.Client.Addrs[0] {
		t.Errorf("the client off the cluster reached the ClusterIP with its own address: not masqueraded")
	}
	if r, err := pod.Request(backendspec.TCP, netip.Addr{}, clusterIP); err != nil || r.Source != pod.Addrs[0] {
		t.Errorf("a pod to the ClusterIP: %+v, %v; want its own address %s", r, err, pod.Addrs[0])
	}
	if be, src, err := nodeRequest(clusterIP); err != nil || src == clusterIP.Addr().String() {
		t.Errorf("the node to the ClusterIP: answered by %q seeing %q, %v; want it masqueraded", be, src, err)
	}
	// IPv6 picks a node address as the source, not the ClusterIP: masqueraded, the endpoint sees
	// the node's address on its own link.
	gateway6 := elsewhere[0].Addrs6[0].Prev().String()
	if be, src, err := nodeRequest(netip.MustParseAddrPort("[fd00:96::21]:80")); err != nil || src != gateway6 {
		t.Errorf("the node to the IPv6 ClusterIP: answered by %q seeing %q, %v; want it masqueraded to %s", be, src, err, gateway6)
	}

	lb := netip.MustParseAddrPort("10.255.0.22:80")
	answered := map[string]bool{}
	for range 8 {
		r, err := pod.Request(backendspec.TCP, netip.Addr{}, lb)
		if err != nil || r.Source != pod.Addrs[0] || r.Backend == pod.Name {
			t.Fatalf("a pod to the Local LoadBalancer IP without a local endpoint: %+v, %v; want another node's endpoint seeing %s", r, err, pod.Addrs[0])
		}
		answered[r.Backend] = true
	}
	if len(answered) != len(elsewhere) {
		t.Errorf("a pod's 8 connections to the Local LoadBalancer IP were answered by %v, want every endpoint", answered)
	}
	for _, dst := range []netip.AddrPort{lb, netip.AddrPortFrom(top.NodeIP, 30022)} {
		be, src, err := nodeRequest(dst)
		if err != nil || !strings.HasPrefix(be, "backend") || be == pod.Name {
			t.Errorf("the node to %s (externalTrafficPolicy: Local, no local endpoint): answered by %q, %v; want another node's endpoint", dst, be, err)
		}
		if src == lb.Addr().String() {
			t.Errorf("the node to %s: the endpoint saw the LoadBalancer IP %s, shared by every node: not masqueraded", dst, src)
		}
	}
	if r, err := top.Client.Request(backendspec.TCP, netip.Addr{}, lb); err == nil {
		t.Errorf("the client off the cluster reached the Local LoadBalancer IP without a local endpoint: %+v", r)
	}

	t.Run("masquerade-all", func(t *testing.T) {
		if err := b.Cleanup(context.Background()); err != nil {
			t.Fatal(err)
		}
		all := newBackend(dataplane.LocalTraffic{MasqueradeAll: true})
		t.Cleanup(func() { _ = all.Cleanup(context.Background()) })
		if r, err := pod.Request(backendspec.TCP, netip.Addr{}, clusterIP); err != nil || r.Source == pod.Addrs[0] {
			t.Errorf("a pod to the ClusterIP with masquerade-all: %+v, %v; want it masqueraded", r, err)
		}
	})
}
