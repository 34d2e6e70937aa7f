package nftables

import (
	"context"
	"strings"
	"testing"

	"sigs.k8s.io/knftables"

	"github.com/heraldlb/herald/dataplane"
	"github.com/heraldlb/herald/dataplane/internal/netnstest"
	"github.com/heraldlb/herald/internal/netnsrun"
)

// sessionLab is a namespace with the table and a session in it.
func sessionLab(t *testing.T) (lab *netnstest.Lab, ns string, nft knftables.Interface, s *session) {
	netnstest.Require(t, "nft")
	lab = netnstest.New(t, "herald-dpt-sess-")
	ns = lab.AddNS("node")
	err := netnsrun.Do(ns, func() (err error) {
		if nft, err = knftables.New(knftables.InetFamily, TableName); err != nil {
			return err
		}
		s, err = newSession(nft)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	tx := nft.NewTransaction()
	tx.Add(&knftables.Table{})
	tx.Add(&knftables.Map{Name: "m", Type: "ipv4_addr . inet_proto . inet_service : verdict"})
	tx.Add(&knftables.Chain{Name: "c1"})
	run(t, ns, s, tx, "")
	return lab, ns, nft, s
}

// run commits tx through s inside ns and checks the error against wantErr ("" = none).
func run(t *testing.T, ns string, s *session, tx *knftables.Transaction, wantErr string) {
	t.Helper()
	err := netnsrun.Do(ns, func() error { return s.Run(context.Background(), tx) })
	switch {
	case wantErr == "" && err != nil:
		t.Fatalf("transaction failed: %v\n%s", err, tx)
	case wantErr != "" && (err == nil || !strings.Contains(err.Error(), wantErr)):
		t.Fatalf("got error %v, want one containing %q", err, wantErr)
	}
}

func listTable(lab *netnstest.Lab, ns string) string {
	return lab.Run(ns, "nft", "list", "table", "inet", TableName)
}

func TestSessionCommitsRejectsAndRecovers(t *testing.T) {
	lab, ns, nft, s := sessionLab(t)
	proc := s.proc
	if proc == nil {
		t.Fatal("no nft -i process: the session fell back to nft -f")
	}

	// A transaction of several commands is committed as a whole.
	tx := nft.NewTransaction()
	tx.Add(&knftables.Chain{Name: "c2"})
	tx.Add(&knftables.Rule{Chain: "c2", Rule: "ip daddr 192.0.2.1 counter"})
	tx.Add(&knftables.Element{Map: "m", Key: []string{"10.0.0.1", "tcp", "80"}, Value: []string{"goto c2"}})
	run(t, ns, s, tx, "")
	if got := listTable(lab, ns); !strings.Contains(got, "10.0.0.1 . tcp . 80 : goto c2") || !strings.Contains(got, "ip daddr 192.0.2.1 counter") {
		t.Fatalf("transaction not applied:\n%s", got)
	}

	// A transaction with one bad command is rejected as a whole, and the error names the
	// command, not the whole line.
	tx = nft.NewTransaction()
	tx.Add(&knftables.Chain{Name: "c3"})
	tx.Add(&knftables.Element{Map: "m", Key: []string{"10.0.0.2", "tcp", "80"}, Value: []string{"goto nosuchchain"}})
	tx.Add(&knftables.Chain{Name: "c4"})
	run(t, ns, s, tx, "Could not process rule: No such file or directory: add element inet herald m { 10.0.0.2 . tcp . 80 : goto nosuchchain }")
	if got := listTable(lab, ns); strings.Contains(got, "c3") || strings.Contains(got, "c4") {
		t.Fatalf("part of a rejected transaction was applied:\n%s", got)
	}
	if s.proc != proc {
		t.Fatal("a clear rejection restarted the nft process")
	}

	// A change made by another nft process is seen (nft refetches when the generation moved).
	lab.Run(ns, "nft", "add", "chain", "inet", TableName, "c5")
	tx = nft.NewTransaction()
	tx.Add(&knftables.Element{Map: "m", Key: []string{"10.0.0.5", "tcp", "80"}, Value: []string{"goto c5"}})
	run(t, ns, s, tx, "")

	// The process dying is doubt: an error, and the next transaction runs in a new process.
	if err := proc.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	tx = nft.NewTransaction()
	tx.Add(&knftables.Chain{Name: "c6"})
	run(t, ns, s, tx, "nft session (restarted")
	tx = nft.NewTransaction()
	tx.Add(&knftables.Chain{Name: "c7"})
	run(t, ns, s, tx, "")
	if s.proc == nil || s.proc == proc {
		t.Fatal("no new nft process after the old one died")
	}
	if got := listTable(lab, ns); !strings.Contains(got, "chain c7") || !strings.Contains(got, "10.0.0.5 . tcp . 80 : goto c5") {
		t.Fatalf("after the restart:\n%s", got)
	}
}

func TestSessionFallsBackWithoutInteractiveNFT(t *testing.T) {
	lab, ns, nft, s := sessionLab(t)
	s.Close()
	s.path = "/bin/true" // starts, but never answers the marker
	tx := nft.NewTransaction()
	tx.Add(&knftables.Chain{Name: "via-fallback"})
	run(t, ns, s, tx, "")
	if !s.disabled || s.proc != nil {
		t.Fatal("the session did not switch to the fallback")
	}
	if got := listTable(lab, ns); !strings.Contains(got, "chain via-fallback") {
		t.Fatalf("fallback transaction not applied:\n%s", got)
	}
}

// After a full sync the proxy warms the session up: the nft process runs before any change
// waits for it, and the warm-up changes nothing.
func TestWarmUpStartsTheSessionAndChangesNothing(t *testing.T) {
	netnstest.Require(t, "nft")
	lab := netnstest.New(t, "herald-dpt-warm-")
	ns := lab.AddNS("node")
	var b *Backend
	if err := netnsrun.Do(ns, func() (err error) { b, err = New(); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	st := state(svcPort("ns", "a", "10.96.0.1", 80, ep("10.1.0.1", 80, false)))
	err := netnsrun.Do(ns, func() error {
		return b.Sync(context.Background(), dataplane.SyncRequest{State: st, Changed: all(st), Full: true})
	})
	if err != nil {
		t.Fatal(err)
	}
	s := b.incremental.(*session)
	if s.running() {
		t.Fatal("a full sync started the session: it should go to nft -f")
	}
	before := listTable(lab, ns)
	if err := netnsrun.Do(ns, func() error { b.WarmUp(context.Background()); return nil }); err != nil {
		t.Fatal(err)
	}
	if !s.running() {
		t.Fatal("WarmUp did not start the nft session")
	}
	if after := listTable(lab, ns); after != before {
		t.Fatalf("WarmUp changed the table:\n%s\nwas:\n%s", after, before)
	}
	// The warm-up is the backend's own commit: the next drift check must not list the table
	// (2.5 s of nft CPU at 10,000 Services, in the way of the first change after a full sync).
	listings := 0
	read := b.readShape
	b.readShape = func(ctx context.Context) (tableShape, error) { listings++; return read(ctx) }
	var drift string
	err = netnsrun.Do(ns, func() (err error) { drift, err = b.CheckDrift(context.Background()); return err })
	if err != nil || drift != "" || listings != 0 {
		t.Fatalf("after the warm-up the drift check said %q, %v, and listed the table %d times; want nothing, 0 times", drift, err, listings)
	}
}
