// Command lab runs Herald's built-in lab: a whole bare-metal cluster in network namespaces on this
// machine (see package e2e/lab). It is a development and test tool, not part of the product.
//
//	lab up [--nodes N] [--pods-per-node N]   build the lab (removing an earlier one first)
//	lab up --kubelet                          ... with real nodes (kubelet, containerd, CNI) and
//	                                          Herald installed by helm from its image
//	lab down                                  remove everything the lab made
//	lab status                                hosts, processes, BGP sessions
//	lab demo                                  up + a LoadBalancer Service walk-through
//	lab demo-cluster                          the same on real nodes: helm install, a Deployment,
//	                                          failover by stopping the announcing node's speaker
//	lab kubectl ARGS...                       kubectl against the lab's apiserver
//	lab exec HOST -- CMD...                   run a command inside a lab host
//
// The lab's directory is $HERALD_LAB_DIR (default /tmp/herald-lab), its namespaces are prefixed
// herald- (--prefix to change).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"

	"github.com/heraldlb/herald/e2e/lab"
)

func main() {
	lab.RunBackendIfAsked()

	fs := flag.NewFlagSet("lab", flag.ExitOnError)
	fs.Usage = usage
	dir := fs.String("dir", envOr("HERALD_LAB_DIR", lab.DefaultDir), "the lab's state directory")
	prefix := fs.String("prefix", lab.DefaultPrefix, "namespace prefix")
	_ = fs.Parse(os.Args[1:])
	if fs.NArg() == 0 {
		usage()
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	cmd, args := fs.Arg(0), fs.Args()[1:]
	var err error
	switch cmd {
	case "up":
		_, err = up(ctx, *dir, *prefix, args)
	case "down":
		err = lab.Down(ctx, *dir, *prefix)
		if err == nil {
			fmt.Println("lab down: no", *prefix+"* namespace or lab process left")
		}
	case "status":
		err = status(ctx, *dir)
	case "demo":
		err = demo(ctx, *dir, *prefix, args)
	case "demo-cluster":
		err = demoCluster(ctx, *dir, *prefix, args)
	case "kubectl":
		err = kubectl(ctx, *dir, args)
	case "exec":
		err = execIn(ctx, *dir, args)
	default:
		usage()
		os.Exit(2)
	}
	if err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			os.Exit(exit.ExitCode())
		}
		fmt.Fprintln(os.Stderr, "lab:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprint(os.Stderr, `usage: lab [--dir DIR] [--prefix herald-] COMMAND
  up [--nodes 3] [--pods-per-node 1] [--bin-dir DIR] [--crds DIR] [--set KEY=VALUE]...
                         build the lab (an earlier one is removed first); Herald runs as the
                         Helm chart renders it with these values (e.g. --set dataplane.mode=nftables)
  up --kubelet [--images DIR]... [--no-herald [--kube-proxy]] [--dns] [--set KEY=VALUE]...
                         real nodes: kubelet, containerd, runc and CNI in every node namespace,
                         kube-scheduler and the default controllers; the image tarballs in DIR
                         (default bin/images, make images) are imported into each node, and
                         Herald is installed with helm install (unless --no-herald); --dns
                         runs CoreDNS behind kube-dns (make test-images, --images bin/test-images)
  down                   remove every namespace, link, process and file the lab made
  status                 hosts, addresses, processes, BGP sessions
  demo                   up, then a LoadBalancer Service walk-through (CI=true: no pauses)
  demo-cluster [--images DIR]...
                         the same as a user meets it, on real nodes (up --kubelet): helm install,
                         a Deployment exposed as a LoadBalancer Service, reached from the client,
                         its announcing node's speaker stopped, reached again
  kubectl ARGS...        kubectl against the lab's apiserver (runs inside herald-cp)
  exec HOST -- CMD...    run CMD inside a lab host (node1, client, ext, router, cp, node1-pod1, ...)
`)
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func up(ctx context.Context, dir, prefix string, args []string) (*lab.Lab, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	binDir := filepath.Dir(self)
	fs := flag.NewFlagSet("up", flag.ExitOnError)
	nodes := fs.Int("nodes", 3, "number of nodes")
	pods := fs.Int("pods-per-node", 1, "backend pods behind each node")
	bins := fs.String("bin-dir", binDir, "directory holding Herald's controller and speaker (those missing are not started)")
	crds := fs.String("crds", filepath.Join(binDir, "..", "config", "crd"), "directory of CRD manifests to install")
	prometheus := fs.Bool("prometheus", false, "also run Prometheus (Debian's prometheus package) in the control plane's namespace, scraping Herald with the chart's alert rules; query it with `lab exec cp -- curl -s 127.0.0.1:9090/api/v1/alerts`")
	var values []string
	fs.Func("set", "a Helm chart value KEY=VALUE (repeatable): the controller and speakers run as the chart renders them", func(v string) error {
		values = append(values, v)
		return nil
	})
	kubelet := fs.Bool("kubelet", false, "real nodes: kubelet, containerd and CNI on every node; Herald installed by helm")
	var imageDirs []string
	fs.Func("images", "with --kubelet: a directory of image tarballs (*.tar) to import into every node (repeatable; default bin/images, make images; bin/test-images: make test-images)", func(v string) error {
		imageDirs = append(imageDirs, v)
		return nil
	})
	noHerald := fs.Bool("no-herald", false, "with --kubelet: do not helm install Herald")
	nodePorts := fs.String("node-port-range", lab.NodePortRange, "the API server's --service-node-port-range (Kubernetes' e2e suite wants its default, 30000-32767)")
	kubeProxy := fs.Bool("kube-proxy", false, "with --kubelet --no-herald: run kube-proxy (nftables mode) on every node as the service proxy, for comparisons")
	dns := fs.Bool("dns", false, "with --kubelet: run CoreDNS behind the kube-dns Service (its image: make test-images, --images bin/test-images)")
	_ = fs.Parse(args)
	if len(imageDirs) == 0 {
		imageDirs = []string{filepath.Join(binDir, "images")}
	}
	cfg := lab.Config{
		Dir: dir, Prefix: prefix, Nodes: *nodes, PodsPerNode: *pods, BinDir: *bins, CRDDir: *crds, ChartValues: values,
		Kubelet: *kubelet, NodePortRange: *nodePorts,
		Logf: func(format string, a ...any) { fmt.Printf("  "+format+"\n", a...) },
	}
	if *kubelet {
		for _, d := range imageDirs {
			tars, err := filepath.Glob(filepath.Join(d, "*.tar"))
			if err != nil {
				return nil, err
			}
			cfg.Images = append(cfg.Images, tars...)
		}
		if len(cfg.Images) == 0 && !*noHerald {
			return nil, fmt.Errorf("no image tarball in %s: run make images (Herald's image), or pass --no-herald", strings.Join(imageDirs, ", "))
		}
	}
	l, err := lab.Up(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("%w\n(the partial lab is left for inspection in %s; `lab down` removes it)", err, dir)
	}
	if *prometheus {
		if err := l.StartPrometheus(ctx, values...); err != nil {
			return nil, fmt.Errorf("%w\n(the lab is up without it; `lab down` removes it)", err)
		}
		fmt.Printf("  prometheus: %s inside %s\n", lab.PrometheusAddress, l.Topology.Host(lab.HostControlPlane).Netns)
	}
	if *kubelet {
		if !*noHerald {
			out, err := l.InstallHerald(values...)
			fmt.Print(out)
			if err != nil {
				return l, err
			}
		}
		if *kubeProxy {
			for _, n := range l.Nodes() {
				if err := l.StartKubeProxy(n.Name); err != nil {
					return l, err
				}
			}
			fmt.Println("  kube-proxy (nftables mode) on every node")
		}
		if *dns {
			if err := l.InstallDNS(ctx); err != nil {
				return l, err
			}
			fmt.Printf("  cluster DNS: CoreDNS behind kube-system/kube-dns at %s\n", lab.ClusterDNS)
		}
		return l, nil
	}
	if _, ok := l.Processes[lab.RoleController]; !ok {
		fmt.Printf("  note: no %s: the Herald controller is not running\n", filepath.Join(*bins, "controller"))
	}
	if _, ok := l.Speaker(l.Nodes()[0].Name); !ok {
		fmt.Printf("  note: no %s: no speaker runs on the nodes\n", filepath.Join(*bins, "speaker"))
	}
	return l, nil
}

func status(ctx context.Context, dir string) error {
	l, err := lab.Load(dir)
	if err != nil {
		return err
	}
	w := tabwriter.NewWriter(os.Stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(w, "HOST\tNAMESPACE\tKIND\tIPV4\tIPV6\tMAC")
	for _, h := range l.Topology.Hosts {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", h.Name, h.Netns, h.Kind, addr(h.IPv4.String()), addr(h.IPv6.String()), addr(h.MAC))
	}
	fmt.Fprintln(w, "\nPROCESS\tPID\tSTATE\tLOG")
	procs := l.Processes
	if l.ControlPlane != nil {
		for _, p := range l.ControlPlane.Processes {
			fmt.Fprintf(w, "%s\t%d\t%s\t%s\n", p.Name, p.PID, alive(p.Alive()), p.Log)
		}
	}
	for _, role := range sortedKeys(procs) {
		p := procs[role]
		fmt.Fprintf(w, "%s\t%d\t%s\t%s\n", role, p.PID, alive(p.Alive()), p.Log)
	}
	w.Flush()
	if ps, err := l.BirdProtocols(ctx); err == nil {
		fmt.Println("\nBGP sessions at the router (BIRD):")
		for _, p := range ps {
			if p.Proto == "BGP" {
				fmt.Printf("  %-10s %-6s since %s  %s\n", p.Name, p.State, p.Since, p.Info)
			}
		}
	} else {
		fmt.Println("\nBIRD:", err)
	}
	fmt.Printf("\nkubeconfig: %s (its server is reachable only inside the lab: use `lab kubectl`)\n", l.Kubeconfig())
	fmt.Printf("BIRD: birdc -s %s show route\n", l.BirdSocket)
	return nil
}

func addr(s string) string {
	if s == "" || s == "invalid IP" {
		return "-"
	}
	return s
}

func alive(ok bool) string {
	if ok {
		return "running"
	}
	return "gone"
}

func kubectl(ctx context.Context, dir string, args []string) error {
	l, err := lab.Load(dir)
	if err != nil {
		return err
	}
	cmd, err := l.Command(ctx, lab.HostControlPlane, append([]string{l.Kubectl, "--kubeconfig", l.Kubeconfig()}, args...)...)
	if err != nil {
		return err
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	return cmd.Run()
}

func execIn(ctx context.Context, dir string, args []string) error {
	if len(args) < 3 || args[1] != "--" {
		return errors.New("usage: lab exec HOST -- CMD [ARGS...]")
	}
	l, err := lab.Load(dir)
	if err != nil {
		return err
	}
	cmd, err := l.Command(ctx, args[0], args[2:]...)
	if err != nil {
		return err
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	return cmd.Run()
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
