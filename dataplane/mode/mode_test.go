package mode

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"k8s.io/client-go/tools/record"
)

func probes(kubeProxy bool, ipvsErr error) Probes {
	return Probes{
		KubeProxy: func(context.Context) (bool, string, error) { return kubeProxy, "nftables table ip kube-proxy", nil },
		IPVS:      func() error { return ipvsErr },
	}
}

func TestDecide(t *testing.T) {
	noIPVS := errors.New("the kernel has no IPVS generic netlink family")
	for _, tc := range []struct {
		flag      string
		kubeProxy bool
		ipvs      error
		want      string
		fallback  bool
		fails     bool
	}{
		{flag: Auto, want: IPVS},
		{flag: Auto, ipvs: noIPVS, want: NFTables, fallback: true},
		{flag: Auto, kubeProxy: true, want: Off},
		{flag: IPVS, ipvs: noIPVS, fails: true},
		{flag: IPVS, want: IPVS},
		{flag: NFTables, ipvs: noIPVS, want: NFTables},
		{flag: Off, want: Off},
		// userspace only when asked for: auto never picks it, even without IPVS.
		{flag: Userspace, kubeProxy: true, ipvs: noIPVS, want: Userspace},
		{flag: Auto, ipvs: noIPVS, want: NFTables, fallback: true},
		{flag: "iptables", fails: true},
	} {
		d, err := Decide(context.Background(), tc.flag, probes(tc.kubeProxy, tc.ipvs))
		if (err != nil) != tc.fails || (err == nil && (d.Backend != tc.want || d.Fallback != tc.fallback)) {
			t.Errorf("Decide(%s, kube-proxy=%v, ipvs=%v) = %+v, %v", tc.flag, tc.kubeProxy, tc.ipvs, d, err)
		}
	}
}

func TestReportFallback(t *testing.T) {
	d, err := Decide(context.Background(), Auto, probes(false, errors.New("no ip_vs")))
	if err != nil {
		t.Fatal(err)
	}
	rec := record.NewFakeRecorder(4)
	metrics := NewMetrics(nil)
	Report(d, slog.New(slog.NewTextHandler(io.Discard, nil)), rec, "node-1", metrics)
	ev := <-rec.Events
	if !strings.HasPrefix(ev, "Warning "+ReasonIPVSFallback) || !strings.Contains(ev, "no ip_vs") {
		t.Fatalf("event %q", ev)
	}
	if v := testutil.ToFloat64(metrics.backend.WithLabelValues(NFTables)); v != 1 {
		t.Fatalf("nftables gauge %v", v)
	}
	if v := testutil.ToFloat64(metrics.backend.WithLabelValues(IPVS)); v != 0 {
		t.Fatalf("ipvs gauge %v", v)
	}
}
