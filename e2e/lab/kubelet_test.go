package lab

import (
	"archive/tar"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
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
