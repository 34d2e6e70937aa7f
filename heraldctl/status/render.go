package status

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/heraldlb/herald/config/v1beta1"
)

// WriteTable prints the report for people: pools, Services, nodes, and BGP sessions when there
// are any, each a table of its own. now is used for ages, so output is reproducible in tests.
func (r Report) WriteTable(w io.Writer, now time.Time) error {
	pools := [][]string{{"POOL", "ADDRESSES", "IPV4 USED/FREE", "IPV6 USED/FREE", "PROBLEMS"}}
	if len(r.Pools) == 0 {
		pools = append(pools, []string{"(none: create an IPAddressPool, see docs/crds.md)"})
	}
	for _, p := range r.Pools {
		pools = append(pools, []string{p.Name, strings.Join(p.Addresses, ","), usage(p.IPv4), usage(p.IPv6),
			orDash(strings.Join(p.Problems, "; "))})
	}

	services := [][]string{{"SERVICE", "IPS", "POOL", "PROXY", "ANNOUNCED BY", "STATE"}}
	if len(r.Services) == 0 {
		services = append(services, []string{"(no Services of type LoadBalancer)"})
	}
	for _, s := range r.Services {
		services = append(services, []string{s.Namespace + "/" + s.Name, orDash(strings.Join(s.IPs, ",")),
			orDash(s.Pool), s.ProxyMode, orDash(announcers(s.AnnouncedBy)), s.state()})
	}

	nodes := [][]string{{"NODE", "ANNOUNCES", "MEMBERS", "DATAPLANE", "UPDATED", "LEASE RENEWED"}}
	if len(r.Nodes) == 0 {
		nodes = append(nodes, []string{"(no SpeakerStatus: are the speakers running? kubectl -n herald-system get pods)"})
	}
	sessions := [][]string{{"NODE", "PEER", "ADDRESS", "BGP", "BFD", "SINCE", "LAST ERROR"}}
	for _, n := range r.Nodes {
		dataplane := orDash(n.Dataplane)
		if n.UserspacePorts > 0 {
			dataplane += fmt.Sprintf(", userspace proxy: %d Service ports", n.UserspacePorts)
		}
		nodes = append(nodes, []string{n.Name, fmt.Sprint(n.AnnouncedIPs), fmt.Sprint(n.MembersAlive),
			dataplane, age(n.LastUpdate, now), age(n.LeaseRenewed, now)})
		for _, s := range n.Sessions {
			sessions = append(sessions, []string{n.Name, s.Peer, s.PeerAddress, s.State, orDash(s.BFDState),
				age(s.Since, now), orDash(s.LastError)})
		}
	}

	tables := [][][]string{pools, services, nodes}
	if len(sessions) > 1 {
		tables = append(tables, sessions)
	}
	for i, rows := range tables {
		if i > 0 {
			fmt.Fprintln(w)
		}
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		for _, row := range rows {
			fmt.Fprintln(tw, strings.Join(row, "\t"))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	return nil
}

// state says in a few words whether the Service is served, and if not, why.
func (s Service) state() string {
	switch {
	case s.Allocated == nil && len(s.IPs) > 0:
		return "IP not from Herald (no herald.io/Allocated condition)"
	case s.Allocated == nil:
		if s.Class != "" {
			return "not Herald's? class " + s.Class + " (no herald.io/Allocated condition)"
		}
		return "pending: no herald.io/Allocated condition (is the controller running?)"
	case s.Allocated.Status != metav1.ConditionTrue:
		return "pending: " + s.Allocated.Reason + ": " + s.Allocated.Message
	case s.Announced != nil && s.Announced.Status != metav1.ConditionTrue:
		return "not announced: " + s.Announced.Reason + ": " + s.Announced.Message
	case s.Announced == nil:
		return "allocated"
	default:
		return "announced"
	}
}

func usage(c *v1beta1.AddressCounts) string {
	if c == nil {
		return "-"
	}
	return c.InUse + "/" + c.Free
}

func announcers(as []Announcer) string {
	var parts []string
	seen := map[string]bool{}
	for _, a := range as {
		p := a.Node + " (" + string(a.Protocol)
		if len(a.Interfaces) > 0 {
			p += " " + strings.Join(a.Interfaces, ",")
		}
		if len(a.Peers) > 0 {
			p += " to " + strings.Join(a.Peers, ",")
		}
		// A dual-stack Service has one entry per IP; one per node and way reads better.
		if !seen[p] {
			seen[p] = true
			parts = append(parts, p+")")
		}
	}
	return strings.Join(parts, ", ")
}

func age(t *metav1.Time, now time.Time) string {
	if t == nil {
		return "-"
	}
	return now.Sub(t.Time).Truncate(time.Second).String() + " ago"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
