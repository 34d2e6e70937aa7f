package lab

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"
)

func TestParseMACs(t *testing.T) {
	got := parseMACs("02:4c:00:77:00:0b\n02:4C:00:77:00:0C\n02:4c:00:77:00:0b\n")
	if len(got) != 2 || got[0] != "02:4c:00:77:00:0b" || got[1] != "02:4c:00:77:00:0c" {
		t.Errorf("arping -r output: %v", got)
	}
	ndisc := "Soliciting fd00:77::200 (fd00:77::200) on eth0...\nTarget link-layer address: 02:4C:00:77:00:0D\n from fd00:77::13\n"
	if got := parseMACs(ndisc); len(got) != 1 || got[0] != "02:4c:00:77:00:0d" {
		t.Errorf("ndisc6 output: %v", got)
	}
}

func TestSolicitedNodeGroup(t *testing.T) {
	if g := SolicitedNodeGroup(netip.MustParseAddr("fd00:77::12:3456")); g.String() != "ff02::1:ff12:3456" {
		t.Errorf("got %s", g)
	}
}

func TestTimeToFirstSuccess(t *testing.T) {
	ctx := context.Background()
	var eventAt time.Time
	calls := 0
	m, err := TimeToFirstSuccess(ctx, func(context.Context) error { eventAt = time.Now(); return nil },
		func(context.Context) error {
			if calls++; calls < 3 {
				return errors.New("not yet")
			}
			return nil
		}, 20*time.Millisecond)
	if err != nil || m.Attempts != 3 {
		t.Fatalf("m=%+v err=%v, want 3 attempts", m, err)
	}
	if m.Elapsed < 40*time.Millisecond || m.Elapsed > time.Since(eventAt) {
		t.Errorf("elapsed %s: want two pauses of 20ms, measured from the event", m.Elapsed)
	}
	if _, err := TimeToFirstSuccess(ctx, func(context.Context) error { return errors.New("boom") }, nil, 0); err == nil {
		t.Error("a failed event was not reported")
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := TimeToFirstSuccess(short, nil, func(context.Context) error { return errors.New("never") }, time.Millisecond); err == nil {
		t.Error("a probe that never succeeds returned no error")
	}
}
