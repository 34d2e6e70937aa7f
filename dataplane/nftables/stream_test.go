package nftables

import (
	"context"
	"strings"
	"testing"

	"sigs.k8s.io/knftables"

	"github.com/heraldlb/herald/internal/netnsrun"
)

// A transaction streamed in parts to one nft is committed whole, or not at all.
func TestStreamCommitsAllPartsOrNothing(t *testing.T) {
	lab, ns, nft, _ := sessionLab(t) // the table with map m and chain c1
	st := streamer{path: "nft", nft: nft}
	stream := func(parts ...func(tx *knftables.Transaction)) error {
		return netnsrun.Do(ns, func() error {
			out, err := st.begin(context.Background())
			if err != nil {
				return err
			}
			for _, p := range parts {
				p(out.Part())
				if err := out.EndPart(); err != nil {
					out.Abort()
					return err
				}
			}
			return out.Commit()
		})
	}
	chain := func(name string) func(tx *knftables.Transaction) {
		return func(tx *knftables.Transaction) { tx.Add(&knftables.Chain{Name: name}) }
	}
	element := func(ip, verdict string) func(tx *knftables.Transaction) {
		return func(tx *knftables.Transaction) {
			tx.Add(&knftables.Element{Map: "m", Key: []string{ip, "tcp", "80"}, Value: []string{verdict}})
		}
	}

	if err := stream(chain("s1"), element("10.0.0.1", "goto s1"), chain("s2")); err != nil {
		t.Fatal(err)
	}
	if got := listTable(lab, ns); !strings.Contains(got, "10.0.0.1 . tcp . 80 : goto s1") || !strings.Contains(got, "chain s2") {
		t.Fatalf("streamed transaction not applied:\n%s", got)
	}

	// nft rejects the last part: the earlier parts are not applied either.
	err := stream(chain("s3"), element("10.0.0.3", "goto s3"), element("10.0.0.4", "goto nosuchchain"))
	if err == nil || !strings.Contains(err.Error(), "nosuchchain") {
		t.Fatalf("got %v, want nft's rejection naming the missing chain", err)
	}
	// knftables refuses an invalid object: the stream is aborted and nothing is sent.
	err = stream(chain("s5"), func(tx *knftables.Transaction) { tx.Add(&knftables.Element{Map: "m"}) })
	if err == nil || !strings.Contains(err.Error(), "invalid nftables object") {
		t.Fatalf("got %v, want the invalid object reported", err)
	}
	if got := listTable(lab, ns); strings.Contains(got, "s3") || strings.Contains(got, "s5") {
		t.Fatalf("part of a failed transaction was applied:\n%s", got)
	}
}
