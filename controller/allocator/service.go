package allocator

import (
	"fmt"
	"net/netip"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/heraldlb/herald/config"
	"github.com/heraldlb/herald/config/addresspool"
	"github.com/heraldlb/herald/config/v1beta1"
)

// ServiceFromAPI reads what the allocator needs from a Service: its annotations (Herald's, or
// MetalLB's aliases), ports, families and current status. nsLabels are its namespace's labels. The
// error says what is malformed, for an InvalidRequest answer.
func ServiceFromAPI(svc *corev1.Service, nsLabels map[string]string) (Service, error) {
	s := Service{
		Key:             svc.Namespace + "/" + svc.Name,
		Namespace:       svc.Namespace,
		Labels:          labels.Set(svc.Labels),
		NamespaceLabels: labels.Set(nsLabels),
		Families:        svc.Spec.IPFamilies,
	}
	s.Pool, _ = config.Annotation(svc.Annotations, config.AnnotationAddressPool)
	s.SharingKey, _ = config.Annotation(svc.Annotations, config.AnnotationAllowSharedIP)
	if svc.Spec.IPFamilyPolicy != nil {
		s.FamilyPolicy = *svc.Spec.IPFamilyPolicy
	}
	for _, p := range svc.Spec.Ports {
		proto := p.Protocol
		if proto == "" {
			proto = corev1.ProtocolTCP
		}
		s.Ports = append(s.Ports, Port{proto, p.Port})
	}
	if svc.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal {
		s.BackendKey = labels.Set(svc.Spec.Selector).String()
	}
	for _, in := range svc.Status.LoadBalancer.Ingress {
		if ip, err := netip.ParseAddr(in.IP); err == nil {
			s.Current = append(s.Current, ip)
		}
	}
	requested, key := config.Annotation(svc.Annotations, config.AnnotationLoadBalancerIPs)
	if requested == "" {
		requested, key = svc.Spec.LoadBalancerIP, "spec.loadBalancerIP"
	}
	for _, field := range strings.Split(requested, ",") {
		if field = strings.TrimSpace(field); field == "" {
			continue
		}
		ip, err := netip.ParseAddr(field)
		if err != nil {
			return s, fmt.Errorf("%s: %q is not an IP address", key, field)
		}
		s.RequestedIPs = append(s.RequestedIPs, ip)
	}
	return s, nil
}

// PoolFromAPI reads an IPAddressPool (parsed by addresspool.Parse: Err says what is malformed).
func PoolFromAPI(p *v1beta1.IPAddressPool) Pool {
	out := Pool{
		Pool:                       addresspool.Parse(p),
		AutoAssign:                 p.Spec.AutoAssign == nil || *p.Spec.AutoAssign,
		AvoidBuggyIPs:              p.Spec.AvoidBuggyIPs,
		AllowCrossNamespaceSharing: p.Spec.AllowCrossNamespaceSharing,
	}
	if sa := p.Spec.ServiceAllocation; sa != nil {
		out.Priority = int(sa.Priority)
		out.Namespaces = sa.Namespaces
	}
	return out
}

// Ingress is the status.loadBalancer.ingress for the addresses, with ipMode VIP set explicitly (the
// apiserver would default it, and a nil ipMode makes every comparison see a change).
func Ingress(ips []netip.Addr) []corev1.LoadBalancerIngress {
	if len(ips) == 0 {
		return nil
	}
	vip := corev1.LoadBalancerIPModeVIP
	out := make([]corev1.LoadBalancerIngress, len(ips))
	for i, ip := range ips {
		out[i] = corev1.LoadBalancerIngress{IP: ip.String(), IPMode: &vip}
	}
	return out
}
