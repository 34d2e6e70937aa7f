package lab

import (
	"fmt"
	"path/filepath"
)

// KubeProxyRole names a node's kube-proxy in State.Processes.
func KubeProxyRole(node string) string { return "kube-proxy/" + node }

// StartKubeProxy runs Kubernetes' kube-proxy (the cached v1.34.4 build, next to kubectl) in nftables
// mode as the node's service proxy, inside the node's namespace, instead of Herald's data plane: the
// comparison runs (hack/conformance.sh, `lab up --kubelet --no-herald --kube-proxy`). It leaves the
// machine-wide conntrack sysctls alone (they are not the node's to set).
func (l *Lab) StartKubeProxy(node string) error {
	n := l.Topology.Host(node)
	if n == nil || n.Kind != KindNode {
		return fmt.Errorf("no lab node %q", node)
	}
	if !l.Kubelet {
		return fmt.Errorf("the lab has no real nodes (lab up --kubelet)")
	}
	return l.startRaw(KubeProxyRole(node), nil, inNodeNetns(n.Netns, filepath.Join(filepath.Dir(l.Kubectl), "kube-proxy"),
		"--proxy-mode=nftables",
		"--kubeconfig="+l.Kubeconfig(),
		"--hostname-override="+node,
		"--cluster-cidr="+PodCIDRV4+","+PodCIDRV6,
		"--conntrack-max-per-core=0",
		"--conntrack-tcp-timeout-established=0",
		"--conntrack-tcp-timeout-close-wait=0",
		"--metrics-bind-address=127.0.0.1:10249",
		"--v=1")...)
}
