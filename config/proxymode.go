package config

import (
	"fmt"
	"strconv"
	"strings"
)

// DefaultUserspaceConnectTries is how many endpoints the userspace proxy tries per new
// connection when herald.io/userspace-connect-tries is absent or invalid.
const DefaultUserspaceConnectTries = 3

// maxUserspaceConnectTries caps the tries: each may wait for the connect timeout, and the
// client waits for all of them.
const maxUserspaceConnectTries = 16

// UserspaceProxy is what a Service's annotations ask of the userspace proxy.
type UserspaceProxy struct {
	// Enabled is herald.io/proxy-mode: userspace.
	Enabled bool
	// ConnectTries is herald.io/userspace-connect-tries.
	ConnectTries int
	// ProxyProtocol is herald.io/userspace-proxy-protocol: v2.
	ProxyProtocol bool
}

// ParseUserspaceProxy reads the proxy-mode annotations of a Service. Invalid values fall back
// (kernel mode, the default tries, no PROXY header) and are reported in the error, which says
// what to write instead: a typo never takes a Service's traffic away.
func ParseUserspaceProxy(annotations map[string]string) (UserspaceProxy, error) {
	out := UserspaceProxy{ConnectTries: DefaultUserspaceConnectTries}
	var errs []string
	switch v := strings.TrimSpace(annotations[AnnotationProxyMode]); v {
	case "", ProxyModeKernel:
	case ProxyModeUserspace:
		out.Enabled = true
	default:
		errs = append(errs, fmt.Sprintf("unknown %s %q: use %q or %q (the kernel data plane serves the Service meanwhile)",
			AnnotationProxyMode, v, ProxyModeUserspace, ProxyModeKernel))
	}
	if v, ok := annotations[AnnotationUserspaceConnectTries]; ok {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil || n < 1 || n > maxUserspaceConnectTries {
			errs = append(errs, fmt.Sprintf("%s %q: use a whole number from 1 to %d (%d meanwhile)",
				AnnotationUserspaceConnectTries, v, maxUserspaceConnectTries, DefaultUserspaceConnectTries))
		} else {
			out.ConnectTries = n
		}
	}
	switch v := strings.TrimSpace(annotations[AnnotationUserspaceProxyProtocol]); v {
	case "":
	case "v2":
		out.ProxyProtocol = true
	default:
		errs = append(errs, fmt.Sprintf("%s %q: the only value is \"v2\" (no PROXY header meanwhile)", AnnotationUserspaceProxyProtocol, v))
	}
	if len(errs) > 0 {
		return out, fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return out, nil
}
