package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensions "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
)

// HeraldNamespace is where Herald keeps its Lease and events (the controller's default --namespace).
const HeraldNamespace = "herald-system"

// EndpointSliceManager is the managed-by label of the EndpointSlices the lab writes.
const EndpointSliceManager = "lab.herald.io"

// registerNodes creates one Node per lab node with its segment addresses and pod CIDRs, Ready. There
// is no kubelet: nothing else writes these Nodes, and the control plane runs no node lifecycle
// controller, so they stay Ready until a test says otherwise.
func (l *Lab) registerNodes(ctx context.Context, c kubernetes.Interface) error {
	for _, h := range l.Nodes() {
		node := &corev1.Node{
			ObjectMeta: metav1.ObjectMeta{Name: h.Name, Labels: map[string]string{
				"kubernetes.io/hostname": h.Name, "kubernetes.io/os": "linux", "herald.io/lab": "true",
			}},
			Spec: corev1.NodeSpec{PodCIDR: h.PodCIDRs[0], PodCIDRs: h.PodCIDRs},
		}
		created, err := c.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
		if err != nil {
			return fmt.Errorf("node %s: %w", h.Name, err)
		}
		if l.Kubelet {
			continue // its kubelet registers with this Node and reports its status
		}
		now := metav1.Now()
		created.Status = corev1.NodeStatus{
			Addresses: []corev1.NodeAddress{
				{Type: corev1.NodeInternalIP, Address: h.IPv4.String()},
				{Type: corev1.NodeInternalIP, Address: h.IPv6.String()},
				{Type: corev1.NodeHostName, Address: h.Name},
			},
			Conditions: []corev1.NodeCondition{{
				Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "LabNode",
				Message:           "a lab node: no kubelet, the lab keeps it Ready",
				LastHeartbeatTime: now, LastTransitionTime: now,
			}},
			NodeInfo: corev1.NodeSystemInfo{OperatingSystem: "linux", Architecture: "amd64"},
		}
		if _, err := c.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("node %s status: %w", h.Name, err)
		}
	}
	return nil
}

func ensureNamespace(ctx context.Context, c kubernetes.Interface, name string) error {
	_, err := c.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}

// installCRDs creates (or updates) every CustomResourceDefinition in dir's YAML files and waits
// until they are served.
func (l *Lab) installCRDs(ctx context.Context, dir string) error {
	if dir == "" {
		return nil
	}
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil || len(files) == 0 {
		return err
	}
	rc, err := l.RESTConfig()
	if err != nil {
		return err
	}
	c, err := apiextensions.NewForConfig(rc)
	if err != nil {
		return err
	}
	var names []string
	for _, f := range files {
		crds, err := readCRDs(f)
		if err != nil {
			return err
		}
		for _, crd := range crds {
			_, err := c.ApiextensionsV1().CustomResourceDefinitions().Create(ctx, crd, metav1.CreateOptions{})
			if apierrors.IsAlreadyExists(err) {
				old, gerr := c.ApiextensionsV1().CustomResourceDefinitions().Get(ctx, crd.Name, metav1.GetOptions{})
				if gerr != nil {
					return gerr
				}
				crd.ResourceVersion = old.ResourceVersion
				_, err = c.ApiextensionsV1().CustomResourceDefinitions().Update(ctx, crd, metav1.UpdateOptions{})
			}
			if err != nil {
				return fmt.Errorf("CRD %s from %s: %w", crd.Name, f, err)
			}
			names = append(names, crd.Name)
		}
	}
	return wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		for _, n := range names {
			crd, err := c.ApiextensionsV1().CustomResourceDefinitions().Get(ctx, n, metav1.GetOptions{})
			if err != nil {
				return false, nil
			}
			established := false
			for _, cond := range crd.Status.Conditions {
				if cond.Type == apiextensionsv1.Established && cond.Status == apiextensionsv1.ConditionTrue {
					established = true
				}
			}
			if !established {
				return false, nil
			}
		}
		return true, nil
	})
}

func readCRDs(path string) ([]*apiextensionsv1.CustomResourceDefinition, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	dec := utilyaml.NewYAMLOrJSONDecoder(f, 4096)
	var out []*apiextensionsv1.CustomResourceDefinition
	for {
		crd := &apiextensionsv1.CustomResourceDefinition{}
		if err := dec.Decode(crd); errors.Is(err, io.EOF) {
			return out, nil
		} else if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if crd.Kind == "CustomResourceDefinition" {
			out = append(out, crd)
		}
	}
}

// LoadBalancerService returns a dual-stack (when possible) LoadBalancer Service without a selector,
// port 80 -> the backends' BackendPort; the lab writes its EndpointSlices (SetEndpoints).
func LoadBalancerService(namespace, name string) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
		Spec: corev1.ServiceSpec{
			Type:           corev1.ServiceTypeLoadBalancer,
			IPFamilyPolicy: ptr.To(corev1.IPFamilyPolicyPreferDualStack),
			Ports: []corev1.ServicePort{{
				Name: "http", Protocol: corev1.ProtocolTCP, Port: 80, TargetPort: intstr.FromInt32(BackendPort),
			}},
		},
	}
}

// SetEndpoints writes the EndpointSlices of svc (one per IP family) so that its endpoints are the
// given backend pods, Ready, on their nodes, with every port of the Service pointing at BackendPort.
// An empty pods list leaves the Service with no endpoints.
func (l *Lab) SetEndpoints(ctx context.Context, c kubernetes.Interface, svc *corev1.Service, pods []*Host) error {
	var ports []discoveryv1.EndpointPort
	for _, p := range svc.Spec.Ports {
		ports = append(ports, discoveryv1.EndpointPort{Name: ptr.To(p.Name), Protocol: ptr.To(p.Protocol), Port: ptr.To(int32(BackendPort))})
	}
	for _, family := range []discoveryv1.AddressType{discoveryv1.AddressTypeIPv4, discoveryv1.AddressTypeIPv6} {
		slice := &discoveryv1.EndpointSlice{
			ObjectMeta: metav1.ObjectMeta{
				Namespace: svc.Namespace,
				Name:      svc.Name + "-" + strings.ToLower(string(family)),
				Labels: map[string]string{
					discoveryv1.LabelServiceName: svc.Name,
					discoveryv1.LabelManagedBy:   EndpointSliceManager,
				},
			},
			AddressType: family,
			Ports:       ports,
			Endpoints:   []discoveryv1.Endpoint{},
		}
		for _, p := range pods {
			ip := p.IPv4
			if family == discoveryv1.AddressTypeIPv6 {
				ip = p.IPv6
			}
			slice.Endpoints = append(slice.Endpoints, discoveryv1.Endpoint{
				Addresses: []string{ip.String()},
				Conditions: discoveryv1.EndpointConditions{
					Ready: ptr.To(true), Serving: ptr.To(true), Terminating: ptr.To(false),
				},
				NodeName: ptr.To(p.Node),
				Hostname: ptr.To(p.Name),
			})
		}
		slices := c.DiscoveryV1().EndpointSlices(svc.Namespace)
		old, err := slices.Get(ctx, slice.Name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			_, err = slices.Create(ctx, slice, metav1.CreateOptions{})
		case err == nil:
			slice.ResourceVersion = old.ResourceVersion
			_, err = slices.Update(ctx, slice, metav1.UpdateOptions{})
		}
		if err != nil {
			return fmt.Errorf("EndpointSlice %s/%s: %w", slice.Namespace, slice.Name, err)
		}
	}
	return nil
}

// CreateBackendService creates svc and its EndpointSlices pointing at pods.
func (l *Lab) CreateBackendService(ctx context.Context, c kubernetes.Interface, svc *corev1.Service, pods []*Host) (*corev1.Service, error) {
	if err := ensureNamespace(ctx, c, svc.Namespace); err != nil {
		return nil, err
	}
	created, err := c.CoreV1().Services(svc.Namespace).Create(ctx, svc, metav1.CreateOptions{})
	if err != nil {
		return nil, err
	}
	return created, l.SetEndpoints(ctx, c, created, pods)
}
