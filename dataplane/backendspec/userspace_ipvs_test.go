package backendspec_test

import (
	"context"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	mobyipvs "github.com/moby/ipvs"
	"golang.org/x/sys/unix"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/heraldlb/herald/dataplane"
	"github.com/heraldlb/herald/dataplane/backendspec"
	"github.com/heraldlb/herald/dataplane/ipvs"
	"github.com/heraldlb/herald/dataplane/userspace"
)

// TestUserspaceUnderIPVS runs a Service annotated herald.io/proxy-mode: userspace on a node with
// the IPVS backend (in the VM): the port gets no virtual server, the proxy listens on the Service's
// own addresses and NodePort, and a client reaches it at the ClusterIP, the LoadBalancer IP and the
// NodePort (TCP) and the ClusterIP (UDP). With one of its two endpoints refusing, no connection
// fails through the proxy while IPVS, serving the same endpoints for another Service, fails some.
// Back in kernel mode the port has its virtual server again.
func TestUserspaceUnderIPVS(t *testing.T) {
	requireIPVS(t)
	top := backendspec.NewTopology(t, 2)
	for _, b := range top.Backends {
		b.Serve(t, backendspec.TCP, 8080)
		b.Serve(t, backendspec.UDP, 5353)
	}
	vs, err := ipvs.New(ipvs.Options{StrictARP: true, SysctlStateFile: filepath.Join(t.TempDir(), "sysctls.json")})
	if err != nil {
		t.Fatal(err)
	}
	proxy := userspace.New(userspace.Options{Direct: true, ConnectTimeout: 300 * time.Millisecond})
	t.Cleanup(proxy.Close)
	vs.SetUserspaceListeners(proxy)
	backend := userspace.NewBackend(vs, proxy)
	t.Cleanup(func() {
		if err := backend.Cleanup(context.Background()); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	h, err := mobyipvs.New("")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)

	clusterIP, kernelIP, lbIP := netip.MustParseAddr("10.96.0.10"), netip.MustParseAddr("10.96.0.20"), netip.MustParseAddr("192.0.2.10")
	// Each Service has both backends' 8080 and backend 2's 8081, where nothing listens.
	port := func(name string, proto v1.Protocol, ip netip.Addr, target int32, user bool) *dataplane.ServicePort {
		sp := &dataplane.ServicePort{
			Name:     dataplane.ServicePortName{NamespacedName: types.NamespacedName{Namespace: "ns", Name: name}, Port: string(proto), Protocol: proto},
			Protocol: proto, Port: 80, ClusterIPs: []netip.Addr{ip}, HasEndpoints: true,
		}
		for i, b := range top.Backends {
			sp.ClusterEndpoints = append(sp.ClusterEndpoints, dataplane.Endpoint{Addr: b.Addrs[0], Port: target, Ready: true, Serving: true, Local: true})
			if i == 1 && proto == v1.ProtocolTCP {
				sp.ClusterEndpoints = append(sp.ClusterEndpoints, dataplane.Endpoint{Addr: b.Addrs[0], Port: 8081, Ready: true, Serving: true, Local: true})
			}
		}
		sp.ExternalEndpoints = sp.ClusterEndpoints
		if user {
			sp.Userspace = &dataplane.UserspaceOptions{ConnectTries: 3}
		}
		return sp
	}
	sync := func(user bool) {
		t.Helper()
		tcp := port("svc", v1.ProtocolTCP, clusterIP, 8080, user)
		tcp.LoadBalancerIPs, tcp.NodePort = []netip.Addr{lbIP}, 30080
		udp := port("svc", v1.ProtocolUDP, clusterIP, 5353, user)
		udp.Port = 53
		st := &dataplane.State{Services: map[types.NamespacedName][]*dataplane.ServicePort{
			tcp.Name.NamespacedName:           {tcp, udp},
			{Namespace: "ns", Name: "kernel"}: {port("kernel", v1.ProtocolTCP, kernelIP, 8080, false)},
		}}
		if err := backend.Sync(context.Background(), dataplane.SyncRequest{State: st, Full: true}); err != nil {
			t.Fatalf("sync: %v", err)
		}
	}
	hasVirtualServer := func(a netip.Addr, p uint16) bool {
		_, err := h.GetService(&mobyipvs.Service{Address: a.AsSlice(), Port: p, Protocol: unix.IPPROTO_TCP, AddressFamily: unix.AF_INET})
		return err == nil
	}

	sync(true)
	for _, vip := range []netip.AddrPort{netip.AddrPortFrom(clusterIP, 80), netip.AddrPortFrom(lbIP, 80), netip.AddrPortFrom(top.NodeIP, 30080)} {
		if hasVirtualServer(vip.Addr(), vip.Port()) {
			t.Errorf("%s has an IPVS virtual server in userspace mode", vip)
		}
	}
	if !hasVirtualServer(kernelIP, 80) {
		t.Fatal("the kernel-mode Service has no virtual server")
	}
	for _, vip := range []netip.AddrPort{netip.AddrPortFrom(clusterIP, 80), netip.AddrPortFrom(lbIP, 80), netip.AddrPortFrom(top.NodeIP, 30080)} {
		r, err := top.Client.Request(backendspec.TCP, netip.Addr{}, vip)
		// The proxy connects from the node: the backend sees the node's address on its link.
		if err != nil || r.Source.As4()[3] != 1 {
			t.Errorf("%s: %+v, %v; want an answer to the node (through the proxy)", vip, r, err)
		}
	}
	if r, err := top.Client.Request(backendspec.UDP, netip.Addr{}, netip.AddrPortFrom(clusterIP, 53)); err != nil {
		t.Errorf("UDP to the ClusterIP: %+v, %v", r, err)
	}

	failed := map[string]int{}
	for _, vip := range []netip.AddrPort{netip.AddrPortFrom(clusterIP, 80), netip.AddrPortFrom(kernelIP, 80)} {
		for range 60 {
			if _, err := top.Client.Request(backendspec.TCP, netip.Addr{}, vip); err != nil {
				failed[vip.String()]++
			}
		}
	}
	t.Logf("with a refusing endpoint listed (1 of 3), failed connections of 60: %v", failed)
	if f := failed[netip.AddrPortFrom(clusterIP, 80).String()]; f != 0 {
		t.Errorf("%d connections failed through the userspace proxy, want 0", f)
	}
	if failed[netip.AddrPortFrom(kernelIP, 80).String()] == 0 {
		t.Error("no connection failed through IPVS: the comparison means nothing")
	}

	sync(false)
	if !hasVirtualServer(clusterIP, 80) {
		t.Error("back in kernel mode, the port has no virtual server")
	}
	if r, err := top.Client.Request(backendspec.TCP, netip.Addr{}, netip.AddrPortFrom(clusterIP, 80)); err == nil && r.Source.As4()[3] == 1 {
		t.Errorf("back in kernel mode, the backend still sees the node: %+v", r)
	}
}
