package ipvs

import (
	"net/netip"
	"testing"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/heraldlb/herald/dataplane"
)

// listeners is a userspace proxy with listeners for the named ports.
type listeners map[dataplane.ServicePortName]bool

func (l listeners) UserspacePorts(n dataplane.ServicePortName) (uint16, uint16, bool) {
	return 1, 2, l[n]
}

func TestUserspacePortGetsNoVirtualServer(t *testing.T) {
	sp := &dataplane.ServicePort{
		Name:     dataplane.ServicePortName{NamespacedName: types.NamespacedName{Namespace: "ns", Name: "svc"}, Protocol: v1.ProtocolTCP},
		Protocol: v1.ProtocolTCP, Port: 80, NodePort: 30080,
		ClusterIPs: []netip.Addr{netip.MustParseAddr("10.96.0.10")}, LoadBalancerIPs: []netip.Addr{netip.MustParseAddr("192.0.2.10")},
		ClusterEndpoints: []dataplane.Endpoint{{Addr: netip.MustParseAddr("10.1.1.2"), Port: 8080, Ready: true, Serving: true}},
		HasEndpoints:     true,
		Userspace:        &dataplane.UserspaceOptions{ConnectTries: 3},
	}
	sp.ExternalEndpoints = sp.ClusterEndpoints
	for _, tc := range []struct {
		name    string
		us      dataplane.UserspaceListeners
		proxied bool
	}{
		{"no proxy", nil, false},
		{"the proxy has no listener for it", listeners{}, false},
		{"proxied", listeners{sp.Name: true}, true},
	} {
		fr := render([]*dataplane.ServicePort{sp}, tc.us, dataplane.LocalTraffic{})
		if got := len(fr.virtualServers) == 0 && len(fr.nodePorts) == 0; got != tc.proxied {
			t.Errorf("%s: %d virtual servers, %d NodePort ones; want none only when proxied", tc.name, len(fr.virtualServers), len(fr.nodePorts))
		}
		// Either way the Service IPs are the node's and the filtering knows the port.
		if len(fr.serviceIPs) != 2 || len(fr.sets[familyIPv4.set(setServicePorts)]) != 2 {
			t.Errorf("%s: Service IPs %v, service ports %v", tc.name, fr.serviceIPs, fr.sets[familyIPv4.set(setServicePorts)])
		}
	}
}
