package heraldctl

import (
	"bytes"
	"context"
	"net"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

func TestWaitPortFree(t *testing.T) {
	held, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := held.LocalAddr().String()
	if err := waitPortFree(context.Background(), addr, 600*time.Millisecond); err == nil || !strings.Contains(err.Error(), "still in use") {
		t.Errorf("held port: err = %v", err)
	}
	go func() { time.Sleep(300 * time.Millisecond); held.Close() }()
	start := time.Now()
	if err := waitPortFree(context.Background(), addr, 5*time.Second); err != nil {
		t.Errorf("released port: %v", err)
	}
	if time.Since(start) < 250*time.Millisecond {
		t.Errorf("returned before the port was released")
	}
}

func TestWaitDaemonSetReady(t *testing.T) {
	ds := &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Namespace: "herald-system", Name: "herald-cleanup", Generation: 1},
		Status:     appsv1.DaemonSetStatus{ObservedGeneration: 1, DesiredNumberScheduled: 3, NumberReady: 2, UpdatedNumberScheduled: 3},
	}
	cs := fake.NewSimpleClientset(ds)
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	err := waitDaemonSetReady(ctx, cs, "herald-system", "herald-cleanup", Streams{Out: &out})
	if err == nil || !strings.Contains(err.Error(), "2 of 3 nodes") {
		t.Fatalf("2 of 3 ready: err = %v", err)
	}

	ds.Status.NumberReady = 3
	if _, err := cs.AppsV1().DaemonSets("herald-system").UpdateStatus(context.Background(), ds, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := waitDaemonSetReady(context.Background(), cs, "herald-system", "herald-cleanup", Streams{Out: &out}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "cleanup done on 3 of 3 nodes") {
		t.Errorf("output %q", out.String())
	}
	if err := waitDaemonSetReady(context.Background(), cs, "herald-system", "missing", Streams{Out: &out}); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("missing DaemonSet: %v", err)
	}
}
