package heraldctl

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensionsclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/heraldlb/herald/heraldctl/migrate"
	"github.com/heraldlb/herald/internal/realapi"
)

// metallbCRD is a stand-in for one of MetalLB's CRDs: same group, names and versions, schema left
// open (what is tested is reading through discovery and the dynamic client, not MetalLB's schema).
func metallbCRD(plural, kind string, versions ...string) *apiextensionsv1.CustomResourceDefinition {
	open := true
	crd := &apiextensionsv1.CustomResourceDefinition{
		ObjectMeta: metav1.ObjectMeta{Name: plural + ".metallb.io"},
		Spec: apiextensionsv1.CustomResourceDefinitionSpec{
			Group: "metallb.io", Scope: apiextensionsv1.NamespaceScoped,
			Names: apiextensionsv1.CustomResourceDefinitionNames{Plural: plural, Kind: kind, ListKind: kind + "List"},
		},
	}
	for i, v := range versions {
		crd.Spec.Versions = append(crd.Spec.Versions, apiextensionsv1.CustomResourceDefinitionVersion{
			Name: v, Served: true, Storage: i == 0,
			Schema: &apiextensionsv1.CustomResourceValidation{OpenAPIV3Schema: &apiextensionsv1.JSONSchemaProps{
				Type: "object", XPreserveUnknownFields: &open}},
		})
	}
	return crd
}

// TestMigrateMetalLBFromRealCluster reads MetalLB objects and Services from a real apiserver,
// translates them, and creates the result in the same apiserver, whose Herald CRDs validate it
// (OpenAPI and CEL): what heraldctl prints is what Herald accepts.
func TestMigrateMetalLBFromRealCluster(t *testing.T) {
	api := realapi.Start(t)
	ctx := context.Background()
	ext := apiextensionsclient.NewForConfigOrDie(api.Config)
	crds := []*apiextensionsv1.CustomResourceDefinition{
		metallbCRD("ipaddresspools", "IPAddressPool", "v1beta1"),
		metallbCRD("l2advertisements", "L2Advertisement", "v1beta1"),
		metallbCRD("bgpadvertisements", "BGPAdvertisement", "v1beta1"),
		metallbCRD("bgppeers", "BGPPeer", "v1beta2", "v1beta1"),
		metallbCRD("communities", "Community", "v1beta1"),
		metallbCRD("bfdprofiles", "BFDProfile", "v1beta1"),
	}
	for _, crd := range crds {
		if _, err := ext.ApiextensionsV1().CustomResourceDefinitions().Create(ctx, crd, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	dyn := dynamic.NewForConfigOrDie(api.Config)
	cs := kubernetes.NewForConfigOrDie(api.Config)
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "metallb-system"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	inputs, err := migrate.ReadFiles([]string{"migrate/testdata/metallb.yaml"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range inputs {
		obj := in.Object.DeepCopy()
		gvk := obj.GroupVersionKind()
		if gvk.Group != migrate.MetalLBGroup {
			continue
		}
		gvr := schema.GroupVersionResource{Group: gvk.Group, Version: gvk.Version, Resource: plural(gvk.Kind)}
		// The CRDs are new: retry until discovery and the REST mapping serve them.
		err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
			_, err := dyn.Resource(gvr).Namespace(obj.GetNamespace()).Create(ctx, obj, metav1.CreateOptions{})
			return err == nil, nil
		})
		if err != nil {
			t.Fatalf("creating %s %s: %v", gvk.Kind, obj.GetName(), err)
		}
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web", Annotations: map[string]string{
			"metallb.universe.tf/address-pool": "lab", "metallb.io/allow-shared-ip": "web"}},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Ports: []corev1.ServicePort{{Port: 80}}},
	}
	if _, err := cs.CoreV1().Services("default").Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	code, out, errOut := run(t, "", "migrate", "metallb", "--kubeconfig", api.Kubeconfig)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	_, fromFiles, _ := run(t, "", "migrate", "metallb", "-f", "migrate/testdata/metallb.yaml")
	if out != fromFiles {
		t.Errorf("from the cluster:\n%s\nfrom the files:\n%s", out, fromFiles)
	}
	if !strings.Contains(errOut, "note: v1 Service default/web (cluster): no change needed") ||
		!strings.Contains(errOut, "7 Herald objects written; 0 untranslated, 0 warnings, 1 notes") {
		t.Errorf("findings:\n%s", errOut)
	}

	// What was printed is accepted by Herald's CRDs.
	objs, err := migrate.ReadFiles([]string{"-"}, strings.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range objs {
		gvk := in.Object.GroupVersionKind()
		gvr := schema.GroupVersionResource{Group: gvk.Group, Version: gvk.Version, Resource: plural(gvk.Kind)}
		if _, err := dyn.Resource(gvr).Create(ctx, &unstructured.Unstructured{Object: in.Object.Object}, metav1.CreateOptions{}); err != nil {
			t.Errorf("Herald's API refuses the translated %s %s: %v", gvk.Kind, in.Object.GetName(), err)
		}
	}
}

func plural(kind string) string {
	switch kind {
	case "Community":
		return "communities"
	default:
		return strings.ToLower(kind) + "s"
	}
}
