package lab

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// Images the real nodes run without a registry: both are the lab binary (bin/lab), which is its
// own pause process (PauseCommand) and the lab's backend (BackendCommand). Pods use them with
// imagePullPolicy Never or IfNotPresent.
const (
	// PauseImage is the sandbox image containerd's CRI plugin asks for (its configured
	// sandbox_image) and the name Kubernetes' e2e suite uses.
	PauseImage = "registry.k8s.io/pause:3.10.1"
	// BackendImage runs the lab's backend: command [/lab, __lab-backend, --name, POD, --node, NODE].
	BackendImage = "lab.herald.io/backend:v1"
	// LabBinaryInImage is where the lab binary is in both images.
	LabBinaryInImage = "/lab"
)

// writeLabImages writes the pause and backend images, made of the static lab binary, as one
// docker-save tarball that `ctr images import` takes.
func writeLabImages(labBinary, out string) error {
	if err := checkStaticBinary(labBinary); err != nil {
		return err
	}
	data, err := os.ReadFile(labBinary)
	if err != nil {
		return fmt.Errorf("%w (run make build)", err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: LabBinaryInImage[1:], Mode: 0o755, Size: int64(len(data)), ModTime: time.Unix(0, 0)}); err != nil {
		return err
	}
	if _, err := tw.Write(data); err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	layerData := buf.Bytes()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(layerData)), nil })
	if err != nil {
		return err
	}
	base, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return err
	}
	refs := map[name.Reference]v1.Image{}
	for ref, entrypoint := range map[string][]string{
		PauseImage:   {LabBinaryInImage, PauseCommand},
		BackendImage: {LabBinaryInImage, BackendCommand},
	} {
		cfg, err := base.ConfigFile()
		if err != nil {
			return err
		}
		cfg = cfg.DeepCopy()
		cfg.Architecture, cfg.OS = "amd64", "linux"
		cfg.Config.Entrypoint = entrypoint
		img, err := mutate.ConfigFile(base, cfg)
		if err != nil {
			return err
		}
		tag, err := name.NewTag(ref)
		if err != nil {
			return err
		}
		refs[tag] = img
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	return tarball.MultiRefWriteToFile(out, refs)
}

// checkStaticBinary refuses a binary that needs a dynamic loader: the images have none.
func checkStaticBinary(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("%w (run make build)", err)
	}
	if bytes.Contains(b, []byte("/lib64/ld-linux")) {
		return fmt.Errorf("%s is dynamically linked; build it with CGO_ENABLED=0 (make build)", path)
	}
	return nil
}
