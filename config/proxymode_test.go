package config

import (
	"strings"
	"testing"
)

func TestParseUserspaceProxy(t *testing.T) {
	for _, tc := range []struct {
		annotations map[string]string
		want        UserspaceProxy
		err         string
	}{
		{nil, UserspaceProxy{ConnectTries: 3}, ""},
		{map[string]string{AnnotationProxyMode: "kernel"}, UserspaceProxy{ConnectTries: 3}, ""},
		{map[string]string{AnnotationProxyMode: "userspace", AnnotationUserspaceConnectTries: "5", AnnotationUserspaceProxyProtocol: "v2"},
			UserspaceProxy{Enabled: true, ConnectTries: 5, ProxyProtocol: true}, ""},
		{map[string]string{AnnotationProxyMode: "Userspace"}, UserspaceProxy{ConnectTries: 3}, `unknown herald.io/proxy-mode "Userspace"`},
		{map[string]string{AnnotationProxyMode: "userspace", AnnotationUserspaceConnectTries: "0"},
			UserspaceProxy{Enabled: true, ConnectTries: 3}, "whole number from 1 to 16"},
		{map[string]string{AnnotationProxyMode: "userspace", AnnotationUserspaceProxyProtocol: "v1"},
			UserspaceProxy{Enabled: true, ConnectTries: 3}, `the only value is "v2"`},
	} {
		got, err := ParseUserspaceProxy(tc.annotations)
		if got != tc.want {
			t.Errorf("%v: %+v, want %+v", tc.annotations, got, tc.want)
		}
		if (err == nil) != (tc.err == "") || err != nil && !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%v: error %v, want %q", tc.annotations, err, tc.err)
		}
	}
}
