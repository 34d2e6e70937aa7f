package migrate

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	k8stesting "k8s.io/client-go/testing"
	"sigs.k8s.io/yaml"

	"github.com/heraldlb/herald/config/v1beta1"
)

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestReadFiles(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "pools.yaml"), `
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: a, namespace: metallb-system}
spec: {addresses: [192.0.2.0/24]}
---
---
apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata: {name: l2, namespace: metallb-system}
`)
	// kubectl get -o json writes a List.
	write(t, filepath.Join(dir, "sub", "peers.json"), `{"apiVersion": "v1", "kind": "List", "items": [
	  {"apiVersion": "metallb.io/v1beta2", "kind": "BGPPeer", "metadata": {"name": "p"}, "spec": {"myASN": 1, "peerASN": 2, "peerAddress": "192.0.2.1"}}]}`)
	write(t, filepath.Join(dir, "README.md"), "not a manifest")

	inputs, err := ReadFiles([]string{dir}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, in := range inputs {
		got = append(got, in.Object.GetKind()+"/"+in.Object.GetName()+" @ "+strings.TrimPrefix(in.Source, dir+"/"))
	}
	want := []string{
		"IPAddressPool/a @ pools.yaml, document 1",
		"L2Advertisement/l2 @ pools.yaml, document 2",
		"BGPPeer/p @ sub/peers.json, document 1, item 1",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("read:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	stdin, err := ReadFiles([]string{"-"}, strings.NewReader("apiVersion: metallb.io/v1beta1\nkind: Community\nmetadata: {name: c}\n"))
	if err != nil || len(stdin) != 1 || stdin[0].Source != "standard input, document 1" {
		t.Errorf("stdin: %v, %v", stdin, err)
	}
}

func TestReadFilesErrorsSayWhereAndWhat(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "bad.yaml"), "apiVersion: v1\nkind: Service\n---\nkey: [unclosed\n")
	write(t, filepath.Join(dir, "nokind.yaml"), "metadata: {name: x}\n")
	for _, tc := range []struct{ path, want string }{
		{filepath.Join(dir, "bad.yaml"), "bad.yaml, document 2"},
		{filepath.Join(dir, "nokind.yaml"), "nokind.yaml, document 1: no apiVersion or kind"},
		{filepath.Join(dir, "missing.yaml"), "check the path given to -f"},
	} {
		_, err := ReadFiles([]string{tc.path}, nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ReadFiles(%s) error = %v, want it to contain %q", tc.path, err, tc.want)
		}
	}
}

func object(apiVersion, kind, ns, name string, spec map[string]any) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{"spec": spec}}
	u.SetAPIVersion(apiVersion)
	u.SetKind(kind)
	u.SetNamespace(ns)
	u.SetName(name)
	return u
}

func TestReadCluster(t *testing.T) {
	scheme := runtime.NewScheme()
	listKinds := map[schema.GroupVersionResource]string{
		{Version: "v1", Resource: "services"}: "ServiceList",
	}
	for _, r := range metallbResources {
		for _, v := range r.versions {
			listKinds[schema.GroupVersionResource{Group: MetalLBGroup, Version: v, Resource: r.resource}] = "List"
		}
	}
	client := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(scheme, listKinds,
		object("metallb.io/v1beta1", "IPAddressPool", "metallb-system", "pool", map[string]any{"addresses": []any{"192.0.2.0/24"}}),
		object("metallb.io/v1beta1", "BGPPeer", "metallb-system", "old-peer", map[string]any{"myASN": int64(1), "peerASN": int64(2), "peerAddress": "192.0.2.1"}),
		object("v1", "Service", "shop", "web", map[string]any{"type": "LoadBalancer"}),
		object("v1", "Service", "shop", "db", map[string]any{"type": "ClusterIP"}),
	)
	// An old MetalLB serves BGPPeer at v1beta1 only, and no BFD profiles.
	client.PrependReactor("list", "*", func(a k8stesting.Action) (bool, runtime.Object, error) {
		gvr := a.GetResource()
		if (gvr.Resource == "bgppeers" && gvr.Version == "v1beta2") || gvr.Resource == "bfdprofiles" {
			return true, nil, apierrors.NewNotFound(gvr.GroupResource(), "")
		}
		return false, nil, nil
	})
	inputs, err := ReadCluster(context.Background(), client, "")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, in := range inputs {
		got = append(got, in.Object.GetKind()+"/"+in.Object.GetName())
	}
	if want := "IPAddressPool/pool BGPPeer/old-peer Service/web"; strings.Join(got, " ") != want {
		t.Errorf("read %v, want %s", got, want)
	}

	none := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(scheme, listKinds)
	none.PrependReactor("list", "*", func(a k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewNotFound(a.GetResource().GroupResource(), "")
	})
	if _, err := ReadCluster(context.Background(), none, ""); err == nil || !strings.Contains(err.Error(), "use -f FILE|DIR") {
		t.Errorf("cluster without MetalLB: error = %v", err)
	}

	forbidden := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(scheme, listKinds)
	forbidden.PrependReactor("list", "*", func(a k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(a.GetResource().GroupResource(), "", nil)
	})
	if _, err := ReadCluster(context.Background(), forbidden, ""); err == nil || !strings.Contains(err.Error(), "kubectl auth can-i list ipaddresspools.metallb.io") {
		t.Errorf("forbidden: error = %v", err)
	}
}

// TestOutputDecodesAsHeraldTypes checks that what is printed is exactly what Herald's API reads:
// every document decodes strictly into its v1beta1 type.
func TestOutputDecodesAsHeraldTypes(t *testing.T) {
	inputs, err := ReadFiles([]string{"testdata/metallb.yaml"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	res := Translate(inputs, Options{})
	out, err := res.YAML()
	if err != nil {
		t.Fatal(err)
	}
	docs := strings.Split(string(out), "---\n")
	if len(docs) != len(res.Objects) || len(docs) < 6 {
		t.Fatalf("%d documents for %d objects", len(docs), len(res.Objects))
	}
	scheme := runtime.NewScheme()
	if err := v1beta1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	kinds := map[string]bool{}
	for _, doc := range docs {
		var u unstructured.Unstructured
		if err := yaml.Unmarshal([]byte(doc), &u.Object); err != nil {
			t.Fatal(err)
		}
		obj, err := scheme.New(u.GroupVersionKind())
		if err != nil {
			t.Fatalf("%s: %v", u.GroupVersionKind(), err)
		}
		if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(u.Object, obj, true); err != nil {
			t.Errorf("%s %s does not decode strictly: %v", u.GetKind(), u.GetName(), err)
		}
		kinds[u.GetKind()] = true
	}
	for _, k := range []string{"IPAddressPool", "L2Advertisement", "BGPAdvertisement", "BGPPeer", "Community", "BFDProfile"} {
		if !kinds[k] {
			t.Errorf("testdata/metallb.yaml produced no %s", k)
		}
	}
}
