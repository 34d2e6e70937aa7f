package main

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"github.com/heraldlb/herald/e2e/lab"
)

// demoApp is the demo's application as a user writes it: a namespace, a Deployment of the lab's
// backend (three replicas, a readiness probe) and a LoadBalancer Service selecting its pods.
func demoApp() (string, error) {
	ns := &corev1.Namespace{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Namespace"}, ObjectMeta: metav1.ObjectMeta{Name: demoNamespace}}
	d := lab.BackendDeployment(demoNamespace, demoService, 3)
	d.TypeMeta = metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"}
	svc := lab.LoadBalancerService(demoNamespace, demoService)
	svc.TypeMeta = metav1.TypeMeta{APIVersion: "v1", Kind: "Service"}
	svc.Spec.Selector = map[string]string{"app": demoService}
	var docs []string
	for _, obj := range []any{ns, d, svc} {
		b, err := yaml.Marshal(obj)
		if err != nil {
			return "", err
		}
		docs = append(docs, string(b))
	}
	return strings.Join(docs, "---\n"), nil
}

// demoCluster is `make demo-cluster`: Herald as a user meets it, on a cluster whose pods are real
// (kubelet, containerd and CNI on every node): helm install, a Deployment exposed as a LoadBalancer
// Service, reached from the client, its announcing node's speaker stopped, reached again.
func demoCluster(ctx context.Context, dir, prefix string, args []string) error {
	began := time.Now()
	n := newNarrator(dir)
	n.step("Build a cluster whose pods are real",
		"Three nodes in network namespaces on this machine, each a real Kubernetes node: kubelet,",
		"containerd, runc and CNI, with kube-scheduler and kube-controller-manager's controllers.",
		"Herald's image is imported into every node's containerd (no registry). No kube-proxy runs:",
		"Herald's data plane will be the cluster's service proxy. Nothing is added to this machine's",
		"own network namespace.")
	l, err := up(ctx, dir, prefix, append([]string{"--kubelet", "--no-herald"}, args...))
	if err != nil {
		return err
	}
	if err := run(ctx, n, l, "kubectl", "get", "nodes", "-o", "wide"); err != nil {
		return err
	}
	n.wait()
	client, err := l.Client()
	if err != nil {
		return err
	}

	n.step("Install Herald with helm",
		"The chart's own templates: the controller Deployment, the speaker DaemonSet (one per node,",
		"host network), RBAC, CRDs. apiServer.host points the pods at the API server, as on a",
		"cluster without kube-proxy.")
	cp := l.Topology.Host(lab.HostControlPlane)
	fmt.Printf("\n    $ helm install herald charts/herald --namespace %s --create-namespace --set apiServer.host=%s --set apiServer.port=%d\n",
		lab.HeraldNamespace, cp.IPv4, lab.APIServerPort)
	installed := time.Now()
	out, err := l.InstallHerald()
	fmt.Print(indent(out))
	if err != nil {
		return err
	}
	if err := waitHeraldReady(ctx, client, len(l.Nodes()), 4*time.Minute); err != nil {
		_ = run(ctx, n, l, "kubectl", "get", "pods", "-n", lab.HeraldNamespace, "-o", "wide")
		return err
	}
	n.say("Herald's pods Ready %s after helm install started.", time.Since(installed).Round(time.Second))
	_ = run(ctx, n, l, "kubectl", "get", "pods", "-n", lab.HeraldNamespace, "-o", "wide")
	n.wait()

	n.step("Give Herald addresses",
		"An IPAddressPool on the nodes' segment (IPv4 and IPv6), announced on the segment (L2:",
		"one node answers ARP/NDP for each address).")
	if err := kubectlApply(ctx, n, l, demoPool); err != nil {
		return err
	}
	n.wait()

	n.step("Deploy an application and expose it as a LoadBalancer Service",
		"Three replicas with a readiness probe; their EndpointSlices come from Kubernetes'",
		"endpointslice controller as the pods turn Ready.")
	app, err := demoApp()
	if err != nil {
		return err
	}
	if err := kubectlApply(ctx, n, l, app); err != nil {
		return err
	}
	svc, err := client.CoreV1().Services(demoNamespace).Get(ctx, demoService, metav1.GetOptions{})
	if err != nil {
		return err
	}
	ips, err := waitForIngress(ctx, client, svc, 2*time.Minute)
	if err != nil {
		return fmt.Errorf("the controller gave the Service no IP: %w", err)
	}
	if err := waitDeploymentReady(ctx, client, 3*time.Minute); err != nil {
		_ = run(ctx, n, l, "kubectl", "get", "pods", "-n", demoNamespace, "-o", "wide")
		return err
	}
	_ = run(ctx, n, l, "kubectl", "get", "pods,svc", "-n", demoNamespace, "-o", "wide")
	n.wait()

	ip4 := firstOf(ips, true)
	n.ip = ip4
	n.step("The client on the segment reaches the Service",
		"ARP for the IP, then HTTP: each backend pod answers with its name and node.")
	target := netip.AddrPortFrom(ip4, 80)
	reach, err := l.HTTPProbe(lab.HostClient, target, 500*time.Millisecond)
	if err != nil {
		return err
	}
	first, err := within(ctx, 30*time.Second, func(ctx context.Context) (lab.Measurement, error) {
		return lab.TimeToFirstSuccess(ctx, nil, reach, 10*time.Millisecond)
	})
	if err != nil {
		return fmt.Errorf("the client cannot reach %s: %w", target, err)
	}
	n.say("first answer %s after the first try", first.Elapsed.Round(time.Millisecond))
	_ = run(ctx, n, l, "exec", "client", "--", "curl", "-s", "http://"+target.String()+"/")
	if counts, err := l.Spread(ctx, lab.HostClient, target, 30, time.Second); err == nil {
		n.say("30 requests, answered by: %v", counts)
	}
	owner := announcer(ctx, n, l, ip4)
	n.wait()
	if owner == nil {
		return fmt.Errorf("no node answers ARP for %s", ip4)
	}

	n.step("The announcing node's speaker stops",
		fmt.Sprintf("%s answers for %s. Its speaker pod's process is frozen (SIGSTOP, as a hung process:", owner.Name, ip4),
		"no heartbeats, no ARP replies). Another speaker must take the IP over and tell the client",
		"(gratuitous ARP). The client forgets the IP's MAC before each request, so each one asks who",
		"has the IP; we time how long until a request is answered through another node.",
		"(Deleting the pod would not move the IP: the DaemonSet restarts it and the IP is held.)")
	pid, err := l.SpeakerPodProcess(owner.Name)
	if err != nil {
		return err
	}
	fmt.Printf("\n    $ kill -STOP %d   # /usr/local/bin/speaker on %s\n", pid, owner.Name)
	m, err := within(ctx, 20*time.Second, func(ctx context.Context) (lab.Measurement, error) {
		return lab.TimeToFirstSuccess(ctx, func(context.Context) error {
			return syscall.Kill(pid, syscall.SIGSTOP)
		}, answeredByOther(l, target, owner), 10*time.Millisecond)
	})
	if err != nil {
		_ = syscall.Kill(pid, syscall.SIGCONT)
		return fmt.Errorf("no other node took over %s: %w", ip4, err)
	}
	n.say("answered through another node %s after the speaker stopped (%d attempts)", m.Elapsed.Round(time.Millisecond), m.Attempts)
	announcer(ctx, n, l, ip4)
	if counts, err := l.Spread(ctx, lab.HostClient, target, 30, time.Second); err == nil {
		n.say("30 requests, answered by: %v", counts)
	}
	if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
		return err
	}
	n.say("%s's speaker resumed (SIGCONT).", owner.Name)
	n.say("demo-cluster took %s.", time.Since(began).Round(time.Second))
	return finish(n)
}

// answeredByOther is a probe that forgets the client's neighbour entry for target's IP, sends one
// request, and succeeds when it was answered and the IP then resolved to a node other than owner.
func answeredByOther(l *lab.Lab, target netip.AddrPort, owner *lab.Host) lab.Probe {
	ip := target.Addr().String()
	return func(ctx context.Context) error {
		if _, err := l.Exec(ctx, lab.HostClient, "ip", "neigh", "flush", "to", ip); err != nil {
			return err
		}
		if _, err := l.Get(ctx, lab.HostClient, target, 300*time.Millisecond); err != nil {
			return err
		}
		out, err := l.Exec(ctx, lab.HostClient, "ip", "neigh", "show", "to", ip)
		if err != nil {
			return err
		}
		f := strings.Fields(string(out))
		for i := range f {
			if f[i] == "lladdr" && i+1 < len(f) {
				if h := l.HostByMAC(f[i+1]); h != nil && h.Name != owner.Name {
					return nil
				}
			}
		}
		return fmt.Errorf("%s still resolves to %s: %s", ip, owner.Name, strings.TrimSpace(string(out)))
	}
}

// waitHeraldReady waits for every speaker and a controller to be Ready.
func waitHeraldReady(ctx context.Context, c kubernetes.Interface, nodes int, timeout time.Duration) error {
	return waitUntil(ctx, timeout, "Herald's speakers and controller Ready", func() bool {
		ds, err := c.AppsV1().DaemonSets(lab.HeraldNamespace).Get(ctx, "herald-speaker", metav1.GetOptions{})
		if err != nil {
			return false
		}
		d, err := c.AppsV1().Deployments(lab.HeraldNamespace).Get(ctx, "herald-controller", metav1.GetOptions{})
		return err == nil && ds.Status.NumberReady == int32(nodes) && d.Status.ReadyReplicas >= 1
	})
}

// waitDeploymentReady waits for the demo's Deployment to have all its replicas Ready.
func waitDeploymentReady(ctx context.Context, c kubernetes.Interface, timeout time.Duration) error {
	return waitUntil(ctx, timeout, "the demo's pods Ready", func() bool {
		d, err := c.AppsV1().Deployments(demoNamespace).Get(ctx, demoService, metav1.GetOptions{})
		return err == nil && d.Spec.Replicas != nil && d.Status.ReadyReplicas == *d.Spec.Replicas
	})
}

func waitUntil(ctx context.Context, timeout time.Duration, what string, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %v: %s", timeout, what)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return nil
}
