package lab

import (
	"archive/tar"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/heraldlb/herald/e2e/proc"
	"github.com/heraldlb/herald/internal/testenv"
)

// TestLabImages reads the pause and backend images back from their tarball: both hold the lab
// binary at /lab and start it in their own mode.
func TestLabImages(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "lab")
	content := []byte("a static lab binary")
	if err := os.WriteFile(bin, content, 0o755); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "images.tar")
	if err := writeLabImages(bin, out); err != nil {
		t.Fatal(err)
	}
	for ref, mode := range map[string]string{PauseImage: PauseCommand, BackendImage: BackendCommand} {
		tag, err := name.NewTag(ref)
		if err != nil {
			t.Fatal(err)
		}
		img, err := tarball.ImageFromPath(out, &tag)
		if err != nil {
			t.Fatalf("%s not in the tarball: %v", ref, err)
		}
		cfg, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if ep := cfg.Config.Entrypoint; len(ep) != 2 || ep[0] != LabBinaryInImage || ep[1] != mode {
			t.Errorf("%s entrypoint %v, want [%s %s]", ref, ep, LabBinaryInImage, mode)
		}
		tr := tar.NewReader(mutate.Extract(img))
		found := false
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if "/"+h.Name == LabBinaryInImage {
				b, _ := io.ReadAll(tr)
				found = string(b) == string(content) && h.Mode&0o111 != 0
			}
		}
		if !found {
			t.Errorf("%s lacks an executable %s with the lab binary", ref, LabBinaryInImage)
		}
	}
	dynamic := filepath.Join(dir, "dynamic")
	if err := os.WriteFile(dynamic, []byte("...\x00/lib64/ld-linux-x86-64.so.2\x00..."), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := writeLabImages(dynamic, out); err == nil {
		t.Error("a dynamically linked lab binary was put in an image that has no loader")
	}
}

// TestCNIConflist: a node's pods get addresses from its own pod CIDRs, above the lab's backend
// namespaces, with the node's cni0 addresses as gateways and no masquerade.
func TestCNIConflist(t *testing.T) {
	topo, err := NewTopology("herald-t-", 2, 0)
	if err != nil {
		t.Fatal(err)
	}
	b, err := cniConflist(topo.Host("node2"), "/tmp/ipam")
	if err != nil {
		t.Fatal(err)
	}
	var conf struct {
		Plugins []struct {
			Type   string `json:"type"`
			Bridge string `json:"bridge"`
			IPMasq bool   `json:"ipMasq"`
			IPAM   struct {
				DataDir string `json:"dataDir"`
				Ranges  [][]struct {
					Subnet, RangeStart, Gateway string
				} `json:"ranges"`
			} `json:"ipam"`
		} `json:"plugins"`
	}
	if err := json.Unmarshal(b, &conf); err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	p := conf.Plugins[0]
	if p.Type != "bridge" || p.Bridge != podBridge || p.IPMasq || p.IPAM.DataDir != "/tmp/ipam" || len(p.IPAM.Ranges) != 2 {
		t.Fatalf("unexpected bridge plugin %+v", p)
	}
	want := [][3]string{{"10.244.2.0/24", "10.244.2.100", "10.244.2.1"}, {"fd00:244:2::/64", "fd00:244:2::100", "fd00:244:2::1"}}
	for i, w := range want {
		r := p.IPAM.Ranges[i][0]
		if got := [3]string{r.Subnet, r.RangeStart, r.Gateway}; got != w {
			t.Errorf("range %d = %v, want %v", i, got, w)
		}
	}
}

func TestUnescapeMount(t *testing.T) {
	for in, want := range map[string]string{`/a/b`: "/a/b", `/a\040b`: "/a b", `/x\134y`: `/x\y`} {
		if got := unescapeMount(in); got != want {
			t.Errorf("unescapeMount(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestContainerdInNodeNamespace starts a node's containerd as the lab does (own root, state and
// socket, inside the node's network namespace), imports the lab's images into it, and checks that
// the clean-up of real nodes removes the node's cgroups, mounts and directory.
func TestContainerdInNodeNamespace(t *testing.T) {
	if os.Geteuid() != 0 {
		testenv.Missing(t, "containerd needs root")
	}
	testenv.Tools(t, "containerd", "runc", "ctr", "nsenter", "ip")
	const prefix = "herald-kl-ct-"
	topo, err := NewTopology(prefix, 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	l := &Lab{logf: t.Logf, State: State{Dir: dir, Topology: topo, Processes: map[string]proc.Process{}, Kubelet: true}}
	node := topo.Host("node1")
	ctx := context.Background()
	if err := os.MkdirAll(filepath.Join(dir, "logs"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := run(ctx, "", "ip", "netns", "add", node.Netns); err != nil {
		t.Fatal(err)
	}
	defer func() { _, _ = run(ctx, "", "ip", "netns", "del", node.Netns) }()
	cleanup := func() error {
		if p, ok := l.Processes[ContainerdRole("node1")]; ok {
			if err := p.Stop(5 * time.Second); err != nil {
				return err
			}
		}
		return downRealNodes(dir, prefix)
	}
	defer func() { _ = cleanup() }()

	if err := l.makeCgroupRoot(l.cgroupRoot("node1")); err != nil {
		t.Fatal(err)
	}
	if err := l.startContainerd(ctx, node); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "lab-binary")
	if err := os.WriteFile(bin, []byte("static"), 0o755); err != nil {
		t.Fatal(err)
	}
	images := filepath.Join(dir, "images.tar")
	if err := writeLabImages(bin, images); err != nil {
		t.Fatal(err)
	}
	sock := l.ContainerdSocket("node1")
	if out, err := run(ctx, "", "ctr", "-a", sock, "-n", "k8s.io", "images", "import", images); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	out, err := run(ctx, "", "ctr", "-a", sock, "-n", "k8s.io", "images", "ls", "-q")
	if err != nil {
		t.Fatal(err)
	}
	for _, ref := range []string{PauseImage, BackendImage} {
		if !strings.Contains(string(out), ref) {
			t.Errorf("image %s not imported; containerd has:\n%s", ref, out)
		}
	}
	if err := cleanup(); err != nil {
		t.Fatalf("clean-up: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "nodes")); !os.IsNotExist(err) {
		t.Errorf("the nodes' directory is left: %v", err)
	}
	hierarchies, _ := cgroupHierarchies(true)
	for _, h := range hierarchies {
		if _, err := os.Stat(filepath.Join(h, l.cgroupRoot("node1"))); !os.IsNotExist(err) {
			t.Errorf("cgroup %s left", filepath.Join(h, l.cgroupRoot("node1")))
		}
	}
	if b, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(b), dir) {
		t.Errorf("mounts under %s left", dir)
	}
}
