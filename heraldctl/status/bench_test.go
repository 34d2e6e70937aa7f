package status

import (
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/heraldlb/herald/config/v1beta1"
)

// BenchmarkBuild builds the report of a large cluster: 10,000 Services over 40 pools, 100 nodes
// each announcing 100 of the IPs.
func BenchmarkBuild(b *testing.B) {
	var pools []v1beta1.IPAddressPool
	for p := 0; p < 40; p++ {
		pools = append(pools, v1beta1.IPAddressPool{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("pool-%d", p)},
			Spec: v1beta1.IPAddressPoolSpec{Addresses: []v1beta1.AddressBlock{v1beta1.AddressBlock(fmt.Sprintf("10.%d.0.0/22", p))}}})
	}
	var services []corev1.Service
	ip := func(i int) string { return fmt.Sprintf("10.%d.%d.%d", i/1000, (i%1000)/250, i%250) }
	for i := 0; i < 10000; i++ {
		services = append(services, lbService("ns", fmt.Sprintf("svc-%d", i), []string{ip(i)}))
	}
	var speakers []v1beta1.SpeakerStatus
	for n := 0; n < 100; n++ {
		s := v1beta1.SpeakerStatus{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("node-%d", n)}}
		for i := n * 100; i < n*100+100; i++ {
			s.Status.Announcements = append(s.Status.Announcements, v1beta1.Announcement{IP: ip(i), Protocol: v1beta1.ProtocolL2})
		}
		speakers = append(speakers, s)
	}
	b.ResetTimer()
	for b.Loop() {
		r := Build(pools, services, speakers, nil)
		if len(r.Services) != 10000 || r.Services[0].Pool == "" {
			b.Fatal("wrong report")
		}
	}
}
