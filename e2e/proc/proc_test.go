package proc

import (
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestStartSignalStop(t *testing.T) {
	log := filepath.Join(t.TempDir(), "p.log")
	p, err := Start("sleeper", []string{"sh", "-c", "echo started; exec sleep 30"}, log, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !p.Alive() {
		t.Fatal("not alive after Start")
	}
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(p.Tail(100), "started"); {
		if time.Now().After(deadline) {
			t.Fatalf("log tail %q", p.Tail(100))
		}
		time.Sleep(5 * time.Millisecond)
	}
	// A record with the same pid but another start time is someone else: never signalled.
	other := p
	other.Start++
	if other.Alive() || other.Signal(syscall.SIGKILL) == nil {
		t.Error("a reused pid was treated as ours")
	}
	if err := p.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	// Stop wakes a stopped process before SIGTERM.
	began := time.Now()
	if err := p.Stop(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	if p.Alive() {
		t.Error("alive after Stop")
	}
	if d := time.Since(began); d > 4*time.Second {
		t.Errorf("Stop took %s: SIGTERM did not reach the stopped process", d)
	}
	if err := p.Stop(time.Second); err != nil {
		t.Errorf("stopping a stopped process: %v", err)
	}
}
