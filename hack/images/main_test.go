package main

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
)

func fakeBinaries(t *testing.T) map[string]string {
	t.Helper()
	dir := t.TempDir()
	files := map[string]string{}
	for _, name := range []string{"controller", "speaker", "heraldctl"} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("\x7fELF static "+name), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := checkStatic(p); err != nil {
			t.Fatal(err)
		}
		files["usr/local/bin/"+name] = p
	}
	return files
}

func untar(t *testing.T, tarPath, dir string) {
	t.Helper()
	f, err := os.Open(tarPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		if want := map[bool]int64{true: 0o755, false: 0o644}[h.Typeflag == tar.TypeDir]; h.Mode != want || h.Uid != 0 || !h.ModTime.Equal(time.Unix(0, 0)) {
			t.Errorf("%s: mode %o uid %d time %s: not normalised", h.Name, h.Mode, h.Uid, h.ModTime)
		}
		p := filepath.Join(dir, h.Name)
		if h.Typeflag == tar.TypeDir {
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestImageLayoutTarball(t *testing.T) {
	var nft map[string]string
	if _, err := os.Stat("/usr/sbin/nft"); err == nil {
		var err error
		if nft, err = withLibraries("/usr/sbin/nft", "usr/sbin/nft"); err != nil {
			t.Fatal(err)
		}
		if err := checkStatic("/usr/sbin/nft"); err == nil {
			t.Error("checkStatic accepted the dynamically linked nft")
		}
	}
	const ref = "ghcr.io/heraldlb/herald:0.1.0"
	img, err := build([]map[string]string{nft, fakeBinaries(t)}, []string{"/usr/local/bin/heraldctl"}, "herald", ref, time.Unix(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "herald.oci.tar")
	if err := writeLayoutTar(img, ref, out); err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	untar(t, out, dir)
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatalf("not an OCI layout: %v", err)
	}
	m, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Manifests) != 1 || m.Manifests[0].Annotations["org.opencontainers.image.ref.name"] != ref {
		t.Fatalf("index: %+v", m.Manifests)
	}
	got, err := idx.Image(m.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := got.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.OS != "linux" || cfg.Architecture != "amd64" || cfg.Config.Labels["org.opencontainers.image.version"] != "0.1.0" {
		t.Errorf("config: %+v", cfg)
	}

	// The flattened file system has the binaries where the chart's commands expect them.
	rc := mutate.Extract(got)
	defer rc.Close()
	tr := tar.NewReader(rc)
	found := map[string]string{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		found[h.Name] = string(b)
	}
	for _, name := range []string{"controller", "speaker", "heraldctl"} {
		if !strings.HasSuffix(found["usr/local/bin/"+name], name) {
			t.Errorf("usr/local/bin/%s missing or wrong", name)
		}
	}
	if nft != nil {
		if _, ok := found["usr/sbin/nft"]; !ok {
			t.Error("usr/sbin/nft missing")
		}
		if _, ok := found["lib64/ld-linux-x86-64.so.2"]; !ok {
			t.Error("nft's dynamic loader missing")
		}
	}

	// Reproducible: the same inputs give the same digest.
	again, err := build([]map[string]string{nft, fakeBinaries(t)}, []string{"/usr/local/bin/heraldctl"}, "herald", ref, time.Unix(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	d1, _ := img.Digest()
	d2, _ := again.Digest()
	if d1 != d2 {
		t.Errorf("two builds differ: %s vs %s", d1, d2)
	}
	out2 := filepath.Join(t.TempDir(), "again.oci.tar")
	if err := writeLayoutTar(again, ref, out2); err != nil {
		t.Fatal(err)
	}
	b1, _ := os.ReadFile(out)
	b2, _ := os.ReadFile(out2)
	if !bytes.Equal(b1, b2) {
		t.Errorf("two tarballs of the same image differ")
	}
}
