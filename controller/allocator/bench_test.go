package allocator

import (
	"fmt"
	"github.com/heraldlb/herald/config"
	"math/rand"
	"runtime"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// BenchmarkAssign measures one Assign+Release of a new Service in a /16 at 1 % and at 99 % fill.
// The pool is fragmented on purpose (filled, then random addresses released) so the free set holds
// as many intervals as it can: the 99 % case must not cost more than twice the 1 % one.
//
//	go test -run='^$' -bench=BenchmarkAssign -benchmem ./controller/allocator
func BenchmarkAssign(b *testing.B) {
	for _, fill := range []float64{0.01, 0.99} {
		b.Run(fmt.Sprintf("fill=%.0f%%", fill*100), func(b *testing.B) {
			a := New()
			a.SetPools([]Pool{mkPool("p", 0, "10.0.0.0/16")})
			const size = 1 << 16
			keys := make([]string, size)
			for i := range keys {
				keys[i] = fmt.Sprintf("ns/s%d", i)
				a.Assign(Service{Key: keys[i], Namespace: "ns"})
			}
			r := rand.New(rand.NewSource(1))
			for _, i := range r.Perm(size)[:int(float64(size)*(1-fill))] {
				a.Release(keys[i])
			}
			s := Service{Key: "ns/new", Namespace: "ns"}
			b.ResetTimer()
			for b.Loop() {
				if res := a.Assign(s); res.Reason != config.ReasonAllocated {
					b.Fatal(res)
				}
				a.Release(s.Key)
			}
		})
	}
}

// BenchmarkPoolMemory reports the heap a pool costs per Service holding an address: the same for a
// /112 and a /64, because free space is stored as intervals, not per address.
//
//	go test -run='^$' -bench=BenchmarkPoolMemory ./controller/allocator
func BenchmarkPoolMemory(b *testing.B) {
	for _, cidr := range []string{"fd00::/112", "fd00::/64"} {
		b.Run("pool="+cidr, func(b *testing.B) {
			const services = 10000
			var perService float64
			for b.Loop() {
				var before, after runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&before)
				a := New()
				a.SetPools([]Pool{mkPool("p", 0, cidr)})
				for i := range services {
					a.Assign(Service{Key: fmt.Sprintf("ns/s%d", i), Namespace: "ns", Families: []corev1.IPFamily{v6}})
				}
				runtime.GC()
				runtime.ReadMemStats(&after)
				perService = float64(after.HeapAlloc-before.HeapAlloc) / services
				runtime.KeepAlive(a)
			}
			b.ReportMetric(perService, "heap-bytes/service")
		})
	}
}
