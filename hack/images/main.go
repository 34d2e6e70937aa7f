// Command images builds Herald's container image without a Docker engine: the static binaries
// from bin/, plus the nft tool and its libraries (the nftables data plane drives nft through
// sigs.k8s.io/knftables), as an OCI image layout written to a tarball that crane, skopeo or a
// registry push can take. hack/images.sh runs it with the chart's image name and tag.
//
// With -binaries= -nft= and -file/-tool/-link/-entrypoint it builds the images Kubernetes' e2e
// suite runs on the lab's real nodes (hack/test-images.sh: agnhost with a shell and the tools the
// tests exec, busybox, CoreDNS) the same way.
package main

import (
	"archive/tar"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

func main() {
	var (
		binDir  = flag.String("bin", "bin", "directory holding the static binaries")
		names   = flag.String("binaries", "controller,speaker,heraldctl", "binaries to include (those missing are an error)")
		nft     = flag.String("nft", "/usr/sbin/nft", "the nft tool to include with its shared libraries; empty: none (no nftables data plane)")
		ref     = flag.String("ref", "", "image reference recorded in the layout, e.g. ghcr.io/heraldlb/herald:0.1.0 (required)")
		out     = flag.String("out", "", "output tarball (required)")
		created = flag.String("created", "1970-01-01T00:00:00Z", "creation time recorded in the image (fixed, so builds are reproducible)")
		entry   = flag.String("entrypoint", "/usr/local/bin/heraldctl", "the image's entrypoint, comma-separated")
		title   = flag.String("title", "herald", "the image's org.opencontainers.image.title label")
		statics = pathFlag{}
		tools   = pathFlag{}
		links   = pathFlag{}
	)
	flag.Var(statics, "file", "a static file to add, PATH_IN_IMAGE=PATH_HERE (repeatable)")
	flag.Var(tools, "tool", "a dynamically linked program to add with the libraries ldd names, PATH_IN_IMAGE=PATH_HERE (repeatable)")
	flag.Var(links, "link", "a symbolic link to add, PATH_IN_IMAGE=TARGET (repeatable)")
	flag.Parse()
	if *ref == "" || *out == "" {
		log.Fatal("images: -ref and -out are required")
	}
	when, err := time.Parse(time.RFC3339, *created)
	if err != nil {
		log.Fatalf("images: -created: %v", err)
	}
	files := map[string]string{} // path in the image -> path on this machine
	for _, name := range strings.Split(*names, ",") {
		if name == "" {
			continue
		}
		src := filepath.Join(*binDir, name)
		if err := checkStatic(src); err != nil {
			log.Fatalf("images: %v (run make build first)", err)
		}
		files["usr/local/bin/"+name] = src
	}
	for p, src := range statics {
		if err := checkStatic(src); err != nil {
			log.Fatalf("images: %v", err)
		}
		files[p] = src
	}
	libs := map[string]string{}
	if *nft != "" {
		tools["usr/sbin/nft"] = *nft
	}
	for p, src := range tools {
		got, err := withLibraries(src, p)
		if err != nil {
			log.Fatalf("images: %v (install its Debian package; for nft: nftables, or pass -nft= to leave nft out)", err)
		}
		maps.Copy(libs, got)
	}
	for p, target := range links {
		libs[p] = symlinkPrefix + target
	}
	img, err := build([]map[string]string{libs, files}, strings.Split(*entry, ","), *title, *ref, when)
	if err != nil {
		log.Fatalf("images: %v", err)
	}
	if err := writeLayoutTar(img, *ref, *out); err != nil {
		log.Fatalf("images: %v", err)
	}
	d, _ := img.Digest()
	fmt.Printf("%s %s %s\n", *out, *ref, d)
}

// checkStatic refuses a binary that needs a dynamic loader: the image has one only for nft.
func checkStatic(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if bytes.Contains(b, []byte("/lib64/ld-linux")) {
		return fmt.Errorf("%s is dynamically linked; build it with CGO_ENABLED=0", path)
	}
	return nil
}

// pathFlag collects repeated PATH_IN_IMAGE=VALUE flags.
type pathFlag map[string]string

func (f pathFlag) String() string { return fmt.Sprint(map[string]string(f)) }
func (f pathFlag) Set(v string) error {
	p, val, ok := strings.Cut(v, "=")
	if !ok || p == "" || val == "" {
		return fmt.Errorf("%q: want PATH_IN_IMAGE=VALUE", v)
	}
	f[strings.TrimPrefix(p, "/")] = val
	return nil
}

// symlinkPrefix marks a layer entry as a symbolic link to the rest of the value, not a file to copy.
const symlinkPrefix = "symlink:"

var lddLine = regexp.MustCompile(`(?:=>\s*)?(/\S+)\s+\(0x`)

// withLibraries returns the binary and every shared library ldd says it loads, by their path in
// the image (the same as on this machine).
func withLibraries(bin, inImage string) (map[string]string, error) {
	out, err := exec.Command("ldd", bin).Output()
	if err != nil {
		return nil, fmt.Errorf("ldd %s: %w", bin, err)
	}
	files := map[string]string{inImage: bin}
	for _, m := range lddLine.FindAllStringSubmatch(string(out), -1) {
		files[strings.TrimPrefix(m[1], "/")] = m[1]
	}
	return files, nil
}

// build makes the image from its layers (each a map of path in the image to path here), in order:
// what changes least first (nft and libraries before Herald's binaries), so registries reuse it.
func build(layerFiles []map[string]string, entrypoint []string, title, ref string, created time.Time) (v1.Image, error) {
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	var layers []v1.Layer
	for _, files := range layerFiles {
		if len(files) == 0 {
			continue
		}
		l, err := layer(files, created)
		if err != nil {
			return nil, err
		}
		layers = append(layers, l)
	}
	img, err := mutate.AppendLayers(img, layers...)
	if err != nil {
		return nil, err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cfg = cfg.DeepCopy()
	cfg.Architecture, cfg.OS = "amd64", "linux"
	cfg.Created = v1.Time{Time: created}
	cfg.Config.Env = []string{"PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	cfg.Config.Entrypoint = entrypoint
	cfg.Config.Labels = map[string]string{
		"org.opencontainers.image.source":  "https://github.com/heraldlb/herald",
		"org.opencontainers.image.title":   title,
		"org.opencontainers.image.version": ref[strings.LastIndex(ref, ":")+1:],
	}
	return mutate.ConfigFile(img, cfg)
}

// layer makes a reproducible tar layer: sorted entries, fixed times, root-owned, with the
// directories leading to each file.
func layer(files map[string]string, created time.Time) (v1.Layer, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	paths := make([]string, 0, len(files))
	for p := range files {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	dirs := map[string]bool{}
	for _, p := range paths {
		var parents []string
		for d := filepath.Dir(p); d != "." && !dirs[d]; d = filepath.Dir(d) {
			parents = append([]string{d}, parents...)
			dirs[d] = true
		}
		for _, d := range parents {
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755, ModTime: created}); err != nil {
				return nil, err
			}
		}
		if target, ok := strings.CutPrefix(files[p], symlinkPrefix); ok {
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: p, Linkname: target, Mode: 0o777, ModTime: created}); err != nil {
				return nil, err
			}
			continue
		}
		b, err := os.ReadFile(files[p])
		if err != nil {
			return nil, err
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: p, Mode: 0o755, Size: int64(len(b)), ModTime: created}); err != nil {
			return nil, err
		}
		if _, err := tw.Write(b); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	data := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil },
		tarball.WithMediaType(types.OCILayer))
}

// writeLayoutTar writes img as an OCI image layout (index.json naming ref) into a tarball.
func writeLayoutTar(img v1.Image, ref, out string) error {
	dir, err := os.MkdirTemp("", "herald-image-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return err
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": ref})); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(f)
	err = filepath.Walk(dir, func(path string, info os.FileInfo, err error) error {
		if err != nil || path == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		hdr, err := tar.FileInfoHeader(info, "")
		if err != nil {
			return err
		}
		// Fixed owner, times and modes, so the tarball depends on the image only.
		hdr.Name, hdr.ModTime, hdr.Uid, hdr.Gid, hdr.Uname, hdr.Gname, hdr.Mode = rel, time.Unix(0, 0), 0, 0, "", "", 0o644
		if info.IsDir() {
			hdr.Name += "/"
			hdr.Mode = 0o755
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if info.IsDir() {
			return nil
		}
		src, err := os.Open(path)
		if err != nil {
			return err
		}
		defer src.Close()
		_, err = io.Copy(tw, src)
		return err
	})
	return errors.Join(err, tw.Close(), f.Close())
}
