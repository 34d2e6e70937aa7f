package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"time"

	"golang.org/x/term"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/heraldlb/herald/e2e/lab"
)

// The demo's objects: one pool on the lab's segment, announced over L2 and BGP, and one
// LoadBalancer Service with a backend behind every node.
const (
	demoNamespace = "demo"
	demoService   = "web"
)

var demoPool = `apiVersion: herald.io/v1beta1
kind: IPAddressPool
metadata:
  name: demo
spec:
  addresses: ["` + lab.L2PoolV4 + `", "` + lab.L2PoolV6 + `"]
---
apiVersion: herald.io/v1beta1
kind: L2Advertisement
metadata:
  name: demo
spec:
  ipAddressPools: [demo]
`

var demoBGP = fmt.Sprintf(`apiVersion: herald.io/v1beta1
kind: BGPPeer
metadata:
  name: router-v4
spec:
  myASN: %[1]d
  peerASN: %[2]d
  peerAddress: 10.77.0.1
---
apiVersion: herald.io/v1beta1
kind: BGPPeer
metadata:
  name: router-v6
spec:
  myASN: %[1]d
  peerASN: %[2]d
  peerAddress: "fd00:77::1"
---
apiVersion: herald.io/v1beta1
kind: BGPAdvertisement
metadata:
  name: demo
spec:
  ipAddressPools: [demo]
`, lab.NodeASN, lab.RouterASN)

// narrator prints the demo's explanations and, on a terminal, pauses between steps.
type narrator struct {
	self    string // how the user invoked lab, for the commands we print
	dir     string
	pause   bool
	in      *bufio.Reader
	stepNum int
	ip      netip.Addr // the Service's IPv4 once assigned, for the closing commands
}

// newNarrator pauses between steps only on a terminal and not under CI=true.
func newNarrator(dir string) *narrator {
	n := &narrator{self: os.Args[0], dir: dir, in: bufio.NewReader(os.Stdin),
		pause: os.Getenv("CI") != "true" && term.IsTerminal(int(os.Stdin.Fd())) && term.IsTerminal(int(os.Stdout.Fd()))}
	if dir != lab.DefaultDir {
		n.self += " --dir " + dir
	}
	return n
}

func (n *narrator) step(title string, explain ...string) {
	n.stepNum++
	fmt.Printf("\n\033[1m==> %d. %s\033[0m\n", n.stepNum, title)
	for _, e := range explain {
		fmt.Println("    " + e)
	}
}

func (n *narrator) say(format string, a ...any) { fmt.Printf("    "+format+"\n", a...) }

func (n *narrator) wait() {
	if n.pause {
		fmt.Print("    [Enter to continue] ")
		_, _ = n.in.ReadString('\n')
	}
}

// demo builds the lab and walks through what Herald does for a LoadBalancer Service, running each
// part only when the capability behind it works, and saying plainly what is not there yet.
func demo(ctx context.Context, dir, prefix string, args []string) error {
	n := newNarrator(dir)
	n.step("Build the lab",
		"A whole bare-metal cluster in network namespaces on this machine: a switch, a real",
		"kube-apiserver, three nodes each running Herald's speaker, a backend pod behind each node,",
		"a BGP router (BIRD 2), a client on the nodes' segment and one behind the router.",
		"Nothing is added to this machine's own network namespace.")
	l, err := up(ctx, dir, prefix, args)
	if err != nil {
		return err
	}
	if err := run(ctx, n, l, "status"); err != nil {
		return err
	}
	n.wait()

	client, err := l.Client()
	if err != nil {
		return err
	}
	_, hasController := l.Processes[lab.RoleController]
	_, hasSpeakers := l.Speaker(l.Nodes()[0].Name)

	n.step("Give Herald addresses",
		"An IPAddressPool on the nodes' segment (IPv4 and IPv6), announced on the segment (L2:",
		"one node answers ARP/NDP for each address).")
	if err := kubectlApply(ctx, n, l, demoPool); err != nil {
		n.say("The pool cannot be created (%v): are the CRDs in config/crd?", err)
		return nil
	}
	n.wait()

	n.step("Create a LoadBalancer Service with three backends",
		"Service demo/web, port 80, and its endpoints: one backend pod behind each node. (The lab",
		"has no kubelet, so it writes the EndpointSlices itself; Herald reads them as usual.)")
	created := time.Now()
	svc, err := l.CreateBackendService(ctx, client, lab.LoadBalancerService(demoNamespace, demoService), l.Pods())
	if err != nil {
		return err
	}
	_ = run(ctx, n, l, "kubectl", "get", "endpointslices", "-n", demoNamespace)
	n.wait()

	n.step("Herald's controller gives the Service its IP",
		"The controller picks addresses from the pool and writes them into the Service's status.")
	if !hasController {
		_ = run(ctx, n, l, "kubectl", "get", "svc", "-n", demoNamespace)
		n.say("NOT THERE YET: bin/controller is not built, so EXTERNAL-IP stays <pending>.")
		return finish(n)
	}
	ips, err := waitForIngress(ctx, client, svc, 30*time.Second)
	took := time.Since(created)
	_ = run(ctx, n, l, "kubectl", "get", "svc", "-n", demoNamespace, "-o", "wide")
	if err != nil {
		_ = run(ctx, n, l, "kubectl", "describe", "svc", "-n", demoNamespace, demoService)
		return fmt.Errorf("the controller runs but gave the Service no IP: %w", err)
	}
	n.say("Service IPs %v, seen %s after the Service was created.", ips, took.Round(time.Millisecond))
	n.wait()

	ip4 := firstOf(ips, true)
	n.ip = ip4
	n.step("The client on the segment reaches the Service",
		"The client asks for the IP's MAC (ARP) and sends HTTP requests; each backend answers with",
		"its name and the client address it saw.")
	if !hasSpeakers {
		n.say("NOT THERE YET: bin/speaker is not built, so no node answers for %s.", ip4)
		return finish(n)
	}
	target := netip.AddrPortFrom(ip4, 80)
	reach, err := l.HTTPProbe(lab.HostClient, target, 500*time.Millisecond)
	if err != nil {
		return err
	}
	first, err := within(ctx, 15*time.Second, func(ctx context.Context) (lab.Measurement, error) {
		return lab.TimeToFirstSuccess(ctx, nil, reach, 10*time.Millisecond)
	})
	if err != nil {
		n.say("NOT THERE YET: the client cannot reach %s (%v).", target, err)
		n.say("That needs the speaker's L2 announcement and its data plane to forward to the backends.")
		bgpStep(ctx, n, l, ip4)
		return finish(n)
	}
	n.say("first successful request %s after the IP was assigned", first.Elapsed.Round(time.Millisecond))
	owner := announcer(ctx, n, l, ip4)
	_ = run(ctx, n, l, "exec", "client", "--", "curl", "-s", "http://"+target.String()+"/")
	counts, err := l.Spread(ctx, lab.HostClient, target, 30, time.Second)
	if err == nil {
		n.say("30 requests, answered by: %v", counts)
	}
	n.wait()

	if owner != nil {
		n.step("The announcing node fails",
			fmt.Sprintf("%s answers for %s. Now it dies: its speaker gets SIGKILL and its link is cut", owner.Name, ip4),
			"(carrier down, as when a server loses power). Another node must take over the IP and tell",
			"the client (gratuitous ARP); we time how long until the client's requests succeed again.")
		fast, err := l.HTTPProbe(lab.HostClient, target, 100*time.Millisecond)
		if err != nil {
			return err
		}
		m, err := within(ctx, 20*time.Second, func(ctx context.Context) (lab.Measurement, error) {
			return lab.TimeToFirstSuccess(ctx, func(ctx context.Context) error {
				return errors.Join(l.SignalSpeaker(owner.Name, syscall.SIGKILL), l.CutLink(ctx, owner.Name))
			}, fast, time.Millisecond)
		})
		if err != nil {
			n.say("NOT THERE YET: no other node took over (%v).", err)
		} else {
			n.say("traffic back %s after the node died (%d attempts)", m.Elapsed.Round(time.Millisecond), m.Attempts)
			announcer(ctx, n, l, ip4)
		}
		if err := errors.Join(l.RestoreLink(ctx, owner.Name), l.StartSpeaker(ctx, owner.Name)); err != nil {
			return err
		}
		n.say("%s is back (link restored, speaker restarted).", owner.Name)
		n.wait()
	}
	bgpStep(ctx, n, l, ip4)
	return finish(n)
}

// bgpStep peers the nodes with the router and shows BIRD's routes and the client behind the router.
func bgpStep(ctx context.Context, n *narrator, l *lab.Lab, ip netip.Addr) {
	n.step("Announce the Service over BGP to the router",
		fmt.Sprintf("BGPPeers (router AS %d, nodes AS %d) and a BGPAdvertisement: every node advertises", lab.RouterASN, lab.NodeASN),
		"the Service IP, BIRD installs the routes, and the client behind the router reaches it.")
	if err := kubectlApply(ctx, n, l, demoBGP); err != nil {
		n.say("could not create the BGP objects: %v", err)
		return
	}
	// Wait until every node's route is in (or 15 s), then show what BIRD has.
	deadline := time.Now().Add(15 * time.Second)
	var routes []lab.BirdRoute
	for time.Now().Before(deadline) && len(routes) < len(l.Nodes()) {
		routes = routes[:0]
		all, err := l.BirdRoutes(ctx)
		if err == nil {
			for _, r := range all {
				if r.Prefix.Contains(ip) && r.Prefix.Bits() == ip.BitLen() {
					routes = append(routes, r)
				}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	if len(routes) == 0 {
		n.say("NOT THERE YET: BIRD has no route to %s after 15 s (BGP sessions below).", ip)
		_ = run(ctx, n, l, "exec", "router", "--", "birdc", "-s", l.BirdSocket, "show", "protocols")
		return
	}
	_ = run(ctx, n, l, "exec", "router", "--", "birdc", "-s", l.BirdSocket, "show", "route", "for", ip.String())
	target := netip.AddrPortFrom(ip, 80)
	reach, err := l.HTTPProbe(lab.HostExternal, target, 500*time.Millisecond)
	if err != nil {
		return
	}
	if _, err := within(ctx, 10*time.Second, func(ctx context.Context) (lab.Measurement, error) {
		return lab.TimeToFirstSuccess(ctx, nil, reach, 10*time.Millisecond)
	}); err != nil {
		n.say("NOT THERE YET: the client behind the router cannot reach %s (%v).", target, err)
		return
	}
	_ = run(ctx, n, l, "exec", "ext", "--", "curl", "-s", "http://"+target.String()+"/")
	if r, err := l.Get(ctx, lab.HostExternal, target, time.Second); err == nil {
		ext, _ := l.Host(lab.HostExternal)
		if r.ClientIP() == ext.IPv4 {
			n.say("%s saw the client's own address %s.", r.Backend, r.ClientIP())
		} else {
			n.say("%s saw %s, not the client's %s: with externalTrafficPolicy Cluster the node", r.Backend, r.ClientIP(), ext.IPv4)
			n.say("masquerades; with Local it keeps the client's address and uses only local backends.")
		}
	}
}

func finish(n *narrator) error {
	ip := "<EXTERNAL-IP>"
	if n.ip.IsValid() {
		ip = n.ip.String()
	}
	fmt.Printf("\n\033[1m==> The lab stays up. Explore it:\033[0m\n")
	for _, c := range []string{
		"status", "kubectl get svc -A", "kubectl get ipaddresspools,l2advertisements,bgppeers",
		"exec client -- curl -s http://" + ip + "/", "exec client -- arping -c 3 -i eth0 " + ip,
		"exec router -- birdc -s " + n.dir + "/bird.ctl show route",
	} {
		fmt.Printf("    %s %s\n", n.self, c)
	}
	fmt.Printf("    logs: %s/logs/, %s/cp/*.log\n", n.dir, n.dir)
	fmt.Printf("\nTear it down with:\n    %s down\n", n.self)
	return nil
}

// run shows and runs one of lab's own subcommands.
func run(ctx context.Context, n *narrator, l *lab.Lab, args ...string) error {
	fmt.Printf("\n    $ %s %s\n", n.self, strings.Join(args, " "))
	var err error
	switch args[0] {
	case "status":
		err = status(ctx, n.dir)
	case "kubectl":
		err = kubectl(ctx, n.dir, args[1:])
	case "exec":
		err = execIn(ctx, n.dir, args[1:])
	}
	fmt.Println()
	return err
}

func kubectlApply(ctx context.Context, n *narrator, l *lab.Lab, manifest string) error {
	fmt.Printf("\n    $ %s kubectl apply -f - <<EOF\n%sEOF\n", n.self, indent(manifest))
	cmd, err := l.Command(ctx, lab.HostControlPlane, l.Kubectl, "--kubeconfig", l.Kubeconfig(), "apply", "-f", "-")
	if err != nil {
		return err
	}
	cmd.Stdin = strings.NewReader(manifest)
	out, err := cmd.CombinedOutput()
	fmt.Print(indent(string(out)))
	return err
}

func indent(s string) string {
	var b strings.Builder
	for _, line := range strings.SplitAfter(s, "\n") {
		if line != "" {
			b.WriteString("    " + line)
		}
	}
	return b.String()
}

func waitForIngress(ctx context.Context, c kubernetes.Interface, svc *corev1.Service, timeout time.Duration) ([]netip.Addr, error) {
	deadline := time.Now().Add(timeout)
	for {
		got, err := c.CoreV1().Services(svc.Namespace).Get(ctx, svc.Name, metav1.GetOptions{})
		if err == nil && len(got.Status.LoadBalancer.Ingress) > 0 {
			var ips []netip.Addr
			for _, in := range got.Status.LoadBalancer.Ingress {
				if a, err := netip.ParseAddr(in.IP); err == nil {
					ips = append(ips, a)
				}
			}
			return ips, nil
		}
		if time.Now().After(deadline) {
			return nil, errors.New("no status.loadBalancer.ingress after " + timeout.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func firstOf(ips []netip.Addr, v4 bool) netip.Addr {
	for _, ip := range ips {
		if ip.Is4() == v4 {
			return ip
		}
	}
	return ips[0]
}

// announcer returns the node whose MAC answers ARP for ip at the client, showing arping's output.
func announcer(ctx context.Context, n *narrator, l *lab.Lab, ip netip.Addr) *lab.Host {
	macs, err := l.ResolveMACs(ctx, lab.HostClient, ip, 3)
	if err != nil || len(macs) == 0 {
		n.say("no node answers ARP for %s yet", ip)
		return nil
	}
	for _, m := range macs {
		if h := l.HostByMAC(m); h != nil {
			n.say("ARP for %s is answered by %s (%s)", ip, m, h.Name)
		}
	}
	if len(macs) > 1 {
		n.say("WARNING: %d MACs answered for %s", len(macs), ip)
	}
	return l.HostByMAC(macs[0])
}

// within runs fn with a context that ends after d.
func within(ctx context.Context, d time.Duration, fn func(ctx context.Context) (lab.Measurement, error)) (lab.Measurement, error) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	return fn(ctx)
}
