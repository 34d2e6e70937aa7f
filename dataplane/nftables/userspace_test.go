package nftables

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/heraldlb/herald/dataplane"
)

type fixedListeners map[dataplane.ServicePortName][2]uint16

func (f fixedListeners) UserspacePorts(n dataplane.ServicePortName) (uint16, uint16, bool) {
	p, ok := f[n]
	return p[0], p[1], ok
}

func TestUserspacePortsRedirectToTheProxy(t *testing.T) {
	p := svcPort("ns", "a", "10.96.0.1", 80, ep("10.244.1.2", 8080, true), ep("10.244.2.2", 8080, false))
	p.NodePort = 30080
	p.AffinityTimeout = time.Minute
	p.ExternalPolicyLocal = true
	p.ShortCircuitEndpoints = p.ClusterEndpoints
	p.ExternalEndpoints = p.ClusterEndpoints[:1]
	p.Userspace = &dataplane.UserspaceOptions{ConnectTries: 3}
	us := fixedListeners{p.Name: {40001, 40002}}

	fr := render([]*dataplane.ServicePort{p}, us, dataplane.LocalTraffic{})
	svc, _ := fr.chain(chainName(chainPrefixService, ipv4, p))
	if !slices.Equal(svc, []string{"meta l4proto tcp redirect to :40001"}) {
		t.Errorf("service chain %q, want only the redirect to the cluster listener", svc)
	}
	ext, _ := fr.chain(chainName(chainPrefixExternal, ipv4, p))
	if len(ext) == 0 || ext[len(ext)-1] != "meta l4proto tcp redirect to :40002" {
		t.Errorf("external chain %q, want it to end with the redirect to the external listener", ext)
	}
	if len(fr.sets) != 0 {
		t.Errorf("affinity sets %v rendered: the proxy keeps affinity itself", fr.sets)
	}
	var guarded []string
	for _, e := range fr.elements {
		if e.container == ipv4.hairpin() {
			t.Errorf("hairpin element %v: the proxy connects from the node, no hairpin", e)
		}
		if e.container == userspacePortsSet {
			guarded = append(guarded, e.key)
		}
	}
	if !slices.Equal(guarded, []string{"tcp . 40001", "tcp . 40002"}) {
		t.Errorf("guarded listener ports %q, want both listeners", guarded)
	}

	// Without a listener (the proxy could not open one) the port is forwarded by nftables.
	fr = render([]*dataplane.ServicePort{p}, fixedListeners{}, dataplane.LocalTraffic{})
	svc, _ = fr.chain(chainName(chainPrefixService, ipv4, p))
	if len(svc) == 0 || strings.Contains(strings.Join(svc, "\n"), "redirect") {
		t.Errorf("service chain %q without a listener, want DNAT rules", svc)
	}
}
