package lab

// The cluster DNS of real nodes (`lab up --kubelet --dns`, Lab.InstallDNS): CoreDNS, built from its
// Go module (hack/k8s-test-bins.sh) into an image (hack/test-images.sh), as a Deployment behind the
// `kube-dns` Service at ClusterDNS, as kubeadm sets it up. Kubernetes' e2e suite reaches Services by
// name, and its queries go through the cluster's service proxy (Herald's data plane, or kube-proxy
// in the comparison run) like any pod's.

import (
	"context"
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
)

// CoreDNSImage is the image hack/test-images.sh builds (bin/test-images).
const CoreDNSImage = "registry.k8s.io/coredns/coredns:v1.15.0"

const (
	dnsNamespace = "kube-system"
	dnsName      = "coredns"
)

// corefile answers for the cluster domain from the API (Services, and pods by address as
// kube-dns did) and nothing else: no name outside the lab resolves.
const corefile = `.:53 {
    errors
    ready :8181
    kubernetes ` + ClusterDomain + ` in-addr.arpa ip6.arpa {
        pods insecure
    }
    cache 5
}
`

// InstallDNS creates CoreDNS (ServiceAccount, RBAC, ConfigMap, Deployment) and the kube-dns Service
// at ClusterDNS, and waits until a CoreDNS pod is Ready. Its pods reach the API server directly (as
// Herald's do, chart value apiServer.host): the `kubernetes` ClusterIP works only once a service
// proxy runs, and the lab may start one after DNS.
func (l *Lab) InstallDNS(ctx context.Context) error {
	if !l.Kubelet {
		return fmt.Errorf("the lab has no real nodes (lab up --kubelet): CoreDNS cannot run")
	}
	c, err := l.Client()
	if err != nil {
		return err
	}
	labels := map[string]string{"k8s-app": "kube-dns"}
	cp := l.Topology.Host(HostControlPlane)
	objs := []func() error{
		func() error {
			_, err := c.CoreV1().ServiceAccounts(dnsNamespace).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: dnsName}}, metav1.CreateOptions{})
			return err
		},
		func() error {
			_, err := c.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{
				ObjectMeta: metav1.ObjectMeta{Name: "system:" + dnsName},
				Rules: []rbacv1.PolicyRule{
					{APIGroups: []string{""}, Resources: []string{"endpoints", "services", "pods", "namespaces"}, Verbs: []string{"list", "watch"}},
					{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: []string{"list", "watch"}},
				},
			}, metav1.CreateOptions{})
			return err
		},
		func() error {
			_, err := c.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
				ObjectMeta: metav1.ObjectMeta{Name: "system:" + dnsName},
				RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "system:" + dnsName},
				Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: dnsName, Namespace: dnsNamespace}},
			}, metav1.CreateOptions{})
			return err
		},
		func() error {
			_, err := c.CoreV1().ConfigMaps(dnsNamespace).Create(ctx, &corev1.ConfigMap{
				ObjectMeta: metav1.ObjectMeta{Name: dnsName}, Data: map[string]string{"Corefile": corefile},
			}, metav1.CreateOptions{})
			return err
		},
		func() error {
			_, err := c.CoreV1().Services(dnsNamespace).Create(ctx, &corev1.Service{
				ObjectMeta: metav1.ObjectMeta{Name: "kube-dns", Labels: labels},
				Spec: corev1.ServiceSpec{
					Selector: labels, ClusterIP: ClusterDNS,
					Ports: []corev1.ServicePort{
						{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP, TargetPort: intstr.FromInt32(53)},
						{Name: "dns-tcp", Port: 53, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(53)},
					},
				},
			}, metav1.CreateOptions{})
			return err
		},
		func() error {
			_, err := c.AppsV1().Deployments(dnsNamespace).Create(ctx, dnsDeployment(labels, cp.IPv4.String()), metav1.CreateOptions{})
			return err
		},
	}
	for _, create := range objs {
		if err := create(); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("cluster DNS: %w", err)
		}
	}
	return waitDeploymentReady(ctx, c, dnsNamespace, dnsName, 2*time.Minute)
}

func dnsDeployment(labels map[string]string, apiHost string) *appsv1.Deployment {
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: dnsName, Labels: labels},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](2),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					ServiceAccountName: dnsName,
					DNSPolicy:          corev1.DNSDefault,
					PriorityClassName:  "system-cluster-critical",
					Containers: []corev1.Container{{
						Name: "coredns", Image: CoreDNSImage, ImagePullPolicy: corev1.PullNever,
						Args: []string{"-conf", "/etc/coredns/Corefile"},
						// Container env wins over the kubelet's service variables: the API server
						// directly, not through the `kubernetes` ClusterIP.
						Env: []corev1.EnvVar{
							{Name: "KUBERNETES_SERVICE_HOST", Value: apiHost},
							{Name: "KUBERNETES_SERVICE_PORT", Value: fmt.Sprint(APIServerPort)},
						},
						Ports: []corev1.ContainerPort{
							{Name: "dns", ContainerPort: 53, Protocol: corev1.ProtocolUDP},
							{Name: "dns-tcp", ContainerPort: 53, Protocol: corev1.ProtocolTCP},
						},
						ReadinessProbe: &corev1.Probe{
							ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/ready", Port: intstr.FromInt32(8181)}},
							PeriodSeconds: 1,
						},
						VolumeMounts: []corev1.VolumeMount{{Name: "config", MountPath: "/etc/coredns"}},
					}},
					Volumes: []corev1.Volume{{Name: "config", VolumeSource: corev1.VolumeSource{
						ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: dnsName}},
					}}},
				},
			},
		},
	}
}

// waitDeploymentReady waits until the Deployment has all its replicas Ready, or says how far it got.
func waitDeploymentReady(ctx context.Context, c kubernetes.Interface, ns, name string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		d, err := c.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
		if err == nil && d.Spec.Replicas != nil && d.Status.ReadyReplicas == *d.Spec.Replicas {
			return nil
		}
		if time.Now().After(deadline) {
			if err != nil {
				return fmt.Errorf("deployment %s/%s: %w", ns, name, err)
			}
			return fmt.Errorf("deployment %s/%s: %d of %d replicas Ready after %s (kubectl -n %s describe pods)",
				ns, name, d.Status.ReadyReplicas, ptr.Deref(d.Spec.Replicas, 0), timeout, ns)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}
