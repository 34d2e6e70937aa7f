package labsuite

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/heraldlb/herald/charts"
	"github.com/heraldlb/herald/e2e/controlplane"
	"github.com/heraldlb/herald/e2e/lab"
)

// KubeletMain is Main for a lab of real nodes (lab.Config.Kubelet): Herald is then installed with
// helm from its image (make images, in $HERALD_BIN_DIR/images, else the repository's bin/images),
// and the lab's pause and backend images are made of bin/lab. Lab(t) hands it to the tests. It
// needs root, containerd, runc, the CNI plugins and the node binaries (hack/deps.sh,
// hack/k8s-node-bins.sh); without them the tests skip, or fail under HERALD_REQUIRE_REAL=1. After
// the lab is down it fails the run if anything named with prefix is left on the machine.
func KubeletMain(m *testing.M, prefix string) {
	os.Exit(runKubelet(m, prefix))
}

func runKubelet(m *testing.M, prefix string) int {
	binDir := os.Getenv("HERALD_BIN_DIR")
	if binDir == "" {
		binDir = filepath.Join(repoRoot(), "bin")
	}
	var images []string
	if missing = kubeletPrerequisites(); missing == "" {
		images, missing = imageTarballs(binDir)
	}
	if missing != "" {
		return m.Run()
	}
	dir, err := os.MkdirTemp("", prefix+"suite-")
	if err != nil {
		labErr = err
		return m.Run()
	}
	defer os.RemoveAll(dir)
	cfg := lab.Config{Dir: filepath.Join(dir, "lab"), Prefix: prefix, BinDir: binDir, Kubelet: true, Images: images,
		Logf: func(format string, args ...any) { fmt.Printf("lab: "+format+"\n", args...) }}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	began := time.Now()
	theLab, labErr = lab.Up(ctx, cfg)
	fmt.Printf("labsuite: real-node lab %s up in %s (err: %v)\n", prefix, time.Since(began).Round(time.Millisecond), labErr)
	code := m.Run()
	if code != 0 || labErr != nil {
		dumpLogs(cfg.Dir)
		dumpPodLogs(cfg.Dir)
	}
	began = time.Now()
	if err := lab.Down(context.Background(), cfg.Dir, prefix); err != nil {
		fmt.Fprintln(os.Stderr, "labsuite: lab down:", err)
		code = 1
	}
	fmt.Printf("labsuite: real-node lab %s down in %s\n", prefix, time.Since(began).Round(time.Millisecond))
	if left := leftovers(prefix); len(left) > 0 {
		fmt.Fprintf(os.Stderr, "labsuite: lab down left %s\n", strings.Join(left, ", "))
		code = 1
	}
	return code
}

func kubeletPrerequisites() string {
	if os.Geteuid() != 0 {
		return "real nodes need root (network namespaces, cgroups, containerd)"
	}
	for _, tool := range []string{"ip", "bridge", "bird", "birdc", "arping", "ndisc6", "containerd", "runc", "ctr", "nsenter"} {
		if _, err := exec.LookPath(tool); err != nil {
			return tool + " not installed (hack/deps.sh: bird2 arping ndisc6 containerd runc containernetworking-plugins)"
		}
	}
	if _, err := os.Stat("/usr/lib/cni/bridge"); err != nil {
		return "CNI plugins not installed (apt-get install containernetworking-plugins)"
	}
	bins, err := controlplane.CachedBinaries()
	if err != nil {
		return err.Error()
	}
	for _, b := range []string{"kubelet", "kube-scheduler"} {
		if _, err := os.Stat(filepath.Join(bins.KubeDir, b)); err != nil {
			return filepath.Join(bins.KubeDir, b) + " missing: build it with hack/k8s-node-bins.sh"
		}
	}
	if _, err := charts.Helm(); err != nil {
		return err.Error()
	}
	return ""
}

// imageTarballs returns Herald's image tarball(s) from make images, or why there are none.
func imageTarballs(binDir string) ([]string, string) {
	if _, err := os.Stat(filepath.Join(binDir, "lab")); err != nil {
		return nil, filepath.Join(binDir, "lab") + " missing: run make build (the lab's pause and backend images are made of it)"
	}
	tars, _ := filepath.Glob(filepath.Join(binDir, "images", "herald-*.tar"))
	if len(tars) == 0 {
		return nil, "no Herald image in " + filepath.Join(binDir, "images") + ": run make images"
	}
	return tars, ""
}

// dumpPodLogs prints the tail of every pod's container logs as the kubelets wrote them.
func dumpPodLogs(dir string) {
	files, _ := filepath.Glob(filepath.Join(dir, "nodes/*/pod-logs/*/*/*.log"))
	for _, f := range files {
		b, _ := os.ReadFile(f)
		if len(b) > 3000 {
			b = b[len(b)-3000:]
		}
		fmt.Printf("----- %s (tail)\n%s\n", f, b)
	}
}

// leftovers lists what of the real nodes is still on the machine: namespaces, cgroups and mounts
// named with the prefix.
func leftovers(prefix string) []string {
	var left []string
	for _, pat := range []string{"/run/netns/" + prefix + "*", "/sys/fs/cgroup/*/" + prefix + "*"} {
		m, _ := filepath.Glob(pat)
		left = append(left, m...)
	}
	if b, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if strings.Contains(line, prefix) {
				left = append(left, "mount "+line)
			}
		}
	}
	return left
}
