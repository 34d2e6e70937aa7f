package migrate

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/dynamic"
)

// ReadFiles reads every object in the given files and directories (YAML or JSON, several
// documents per file, and List objects as kubectl get -o yaml writes them). Directories are read
// recursively, taking files ending in .yaml, .yml or .json; "-" is standard input.
func ReadFiles(paths []string, stdin io.Reader) ([]Input, error) {
	var inputs []Input
	for _, p := range paths {
		if p == "-" {
			in, err := readStream(stdin, "standard input")
			if err != nil {
				return nil, err
			}
			inputs = append(inputs, in...)
			continue
		}
		err := filepath.WalkDir(p, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return fmt.Errorf("%w (check the path given to -f)", err)
			}
			if d.IsDir() || (path != p && !isManifest(path)) {
				return nil
			}
			f, err := os.Open(path)
			if err != nil {
				return err
			}
			defer f.Close()
			in, err := readStream(f, path)
			inputs = append(inputs, in...)
			return err
		})
		if err != nil {
			return nil, err
		}
	}
	return inputs, nil
}

func isManifest(path string) bool {
	switch strings.ToLower(filepath.Ext(path)) {
	case ".yaml", ".yml", ".json":
		return true
	}
	return false
}

func readStream(r io.Reader, name string) ([]Input, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(r, 4096)
	var inputs []Input
	for doc := 1; ; doc++ {
		var obj map[string]any
		err := dec.Decode(&obj)
		if errors.Is(err, io.EOF) {
			return inputs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s, document %d: %w (is it YAML or JSON Kubernetes manifests?)", name, doc, err)
		}
		if len(obj) == 0 {
			continue // an empty document, e.g. after a trailing ---
		}
		u := unstructured.Unstructured{Object: obj}
		source := fmt.Sprintf("%s, document %d", name, doc)
		if u.IsList() {
			list, err := u.ToList()
			if err != nil {
				return nil, fmt.Errorf("%s: %w", source, err)
			}
			for i, item := range list.Items {
				inputs = append(inputs, Input{Object: item, Source: fmt.Sprintf("%s, item %d", source, i+1)})
			}
			continue
		}
		if u.GetKind() == "" || u.GetAPIVersion() == "" {
			return nil, fmt.Errorf("%s: no apiVersion or kind; is this a Kubernetes manifest?", source)
		}
		inputs = append(inputs, Input{Object: u, Source: source})
	}
}

// metallbResources are the MetalLB resources read from a cluster, each with the versions to try,
// newest first (MetalLB before v0.13.5 serves BGPPeer at v1beta1 only).
var metallbResources = []struct {
	resource string
	versions []string
}{
	{"ipaddresspools", []string{"v1beta1"}},
	{"l2advertisements", []string{"v1beta1"}},
	{"bgpadvertisements", []string{"v1beta1"}},
	{"bgppeers", []string{"v1beta2", "v1beta1"}},
	{"communities", []string{"v1beta1"}},
	{"bfdprofiles", []string{"v1beta1"}},
}

// ReadCluster lists MetalLB's objects (in namespace, or all namespaces when it is empty) and the
// Services of type LoadBalancer. A MetalLB resource the cluster does not serve is skipped; none at
// all is an error, because then this is most likely the wrong cluster.
func ReadCluster(ctx context.Context, client dynamic.Interface, namespace string) ([]Input, error) {
	var inputs []Input
	served := 0
	for _, r := range metallbResources {
		for _, version := range r.versions {
			gvr := schema.GroupVersionResource{Group: MetalLBGroup, Version: version, Resource: r.resource}
			list, err := client.Resource(gvr).Namespace(namespace).List(ctx, metav1.ListOptions{})
			if apierrors.IsNotFound(err) {
				continue
			}
			if err != nil {
				return nil, listError(gvr, err)
			}
			served++
			for _, item := range list.Items {
				inputs = append(inputs, Input{Object: item, Source: "cluster"})
			}
			break
		}
	}
	if served == 0 {
		return nil, errors.New("this cluster serves none of MetalLB's resources (metallb.io): is your kubeconfig pointing at the " +
			"cluster running MetalLB (--kubeconfig, or the current context)? To translate saved manifests instead, use -f FILE|DIR")
	}
	svcs, err := client.Resource(schema.GroupVersionResource{Version: "v1", Resource: "services"}).Namespace("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, listError(schema.GroupVersionResource{Version: "v1", Resource: "services"}, err)
	}
	for _, item := range svcs.Items {
		if typ, _, _ := unstructured.NestedString(item.Object, "spec", "type"); typ == "LoadBalancer" {
			item.SetAPIVersion("v1")
			item.SetKind("Service")
			inputs = append(inputs, Input{Object: item, Source: "cluster"})
		}
	}
	return inputs, nil
}

func listError(gvr schema.GroupVersionResource, err error) error {
	what := gvr.Resource
	if gvr.Group != "" {
		what += "." + gvr.Group
	}
	switch {
	case apierrors.IsForbidden(err):
		return fmt.Errorf("listing %s: %w; your user needs list access to it (kubectl auth can-i list %s -A)", what, err, what)
	case apierrors.IsUnauthorized(err):
		return fmt.Errorf("listing %s: %w; your credentials were refused: log in again or check --kubeconfig", what, err)
	default:
		return fmt.Errorf("listing %s: %w; is the cluster reachable (kubectl get nodes)?", what, err)
	}
}
