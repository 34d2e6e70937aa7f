package dataplane_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/heraldlb/herald/e2e/lab"
	"github.com/heraldlb/herald/e2e/lab/labsuite"
)

// TestStreamSurvivesEndpointChange: a long-lived TCP connection to the LoadBalancer IP, opened
// before the Service's endpoints change (one backend added, another removed), keeps receiving
// from its original backend without a reset, while new connections see only the new set.
func TestStreamSurvivesEndpointChange(t *testing.T) {
	l := labsuite.Lab(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cs, dyn := labsuite.Clients(t, l)
	l2Pool(t, dyn, "dpe-stream", "10.77.0.237/32")
	pods := l.Pods()
	svc := service(t, l, cs, "stream", "10.77.0.237", pods[:2], nil)
	addr := lbAddr(svc)
	waitForAnswers(t, l, lab.HostClient, addr)

	// The backend's /stream writes one reply line every 100 ms until the client goes away.
	client, err := l.Host(lab.HostClient)
	if err != nil {
		t.Fatal(err)
	}
	streaming := &http.Client{Transport: &http.Transport{DialContext: lab.DialerIn(client.Netns)}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr.String()+"/stream?interval=100ms", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := streaming.Do(req) //nolint:bodyclose // closed by the defer below; the goroutine only reads it
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	type line struct {
		reply lab.BackendReply
		err   error
	}
	lines := make(chan line, 100)
	go func() {
		dec := json.NewDecoder(resp.Body)
		for {
			var r lab.BackendReply
			err := dec.Decode(&r)
			select {
			case lines <- line{r, err}:
			case <-ctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	// next returns the stream's next line, failing the test on an error or a pause over 2 s.
	next := func(when string) lab.BackendReply {
		t.Helper()
		select {
		case ln := <-lines:
			if ln.err != nil {
				t.Fatalf("the stream broke %s: %v", when, ln.err)
			}
			return ln.reply
		case <-time.After(2 * time.Second):
			t.Fatalf("the stream sent nothing for 2 s %s", when)
		}
		return lab.BackendReply{}
	}
	first := next("before the change")
	t.Logf("stream on backend %s, seen as %s", first.Backend, first.Client)

	// Keep the stream's backend, remove the other one, add the third.
	var kept, removed *lab.Host
	for _, p := range pods[:2] {
		if p.Name == first.Backend {
			kept = p
		} else {
			removed = p
		}
	}
	if kept == nil {
		t.Fatalf("the stream is served by %q, not one of the Service's endpoints %s, %s", first.Backend, pods[0].Name, pods[1].Name)
	}
	added := pods[2]
	if err := l.SetEndpoints(ctx, cs, svc, []*lab.Host{kept, added}); err != nil {
		t.Fatal(err)
	}
	changed := time.Now()

	// Drain the stream while new connections are checked, so it never backs up.
	var received []lab.BackendReply
	checkStream := func(when string) {
		for {
			select {
			case ln := <-lines:
				if ln.err != nil {
					t.Fatalf("the stream broke %s: %v", when, ln.err)
				}
				received = append(received, ln.reply)
			default:
				return
			}
		}
	}
	labsuite.WaitFor(t, 30*time.Second, "new connections reaching only "+kept.Name+" and "+added.Name+", not "+removed.Name, func() (bool, string) {
		checkStream("while the change took effect")
		counts, err := l.Spread(ctx, lab.HostClient, addr, 12, time.Second)
		return err == nil && answeredByExactly(counts, []*lab.Host{kept, added}), fmt.Sprint(counts, err)
	})
	t.Logf("new connections saw the new set %v after the change", time.Since(changed).Round(time.Millisecond))
	// A further second of stream after the change is in force everywhere.
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); {
		received = append(received, next("after the change"))
	}
	for _, r := range received {
		if r.Backend != first.Backend || r.Client != first.Client {
			t.Fatalf("a line of the stream came from %s seen as %s, want the original connection: %s seen as %s",
				r.Backend, r.Client, first.Backend, first.Client)
		}
	}
	// At 100 ms per line, the time since the change bounds how many lines must have arrived.
	if want := int(time.Since(changed)/(100*time.Millisecond)) / 2; len(received) < want {
		t.Errorf("the stream delivered %d lines in the %v since the change, want at least %d", len(received), time.Since(changed).Round(time.Millisecond), want)
	}
	t.Logf("the stream delivered %d lines from %s across the change", len(received), first.Backend)
}
