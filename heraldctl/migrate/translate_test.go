package migrate

import (
	"strings"
	"testing"
)

// translateYAML runs the translation on a MetalLB-style manifest.
func translateYAML(t *testing.T, manifest string) Result {
	t.Helper()
	inputs, err := readStream(strings.NewReader(manifest), "test.yaml")
	if err != nil {
		t.Fatalf("reading the manifest: %v", err)
	}
	return Translate(inputs, Options{})
}

// want is a finding expected in a result: its severity and a piece of its message.
type want struct {
	sev  Severity
	text string
}

func TestTranslate(t *testing.T) {
	cases := []struct {
		name     string
		in       string
		out      string // the exact YAML expected
		findings []want // each must be present; no other warning or untranslated finding may be
	}{{
		name: "IPAddressPool with every field",
		in: `
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: pool-a, namespace: metallb-system, labels: {tier: web}, annotations: {x: y}}
spec:
  addresses: [192.0.2.0/28, "198.51.100.10-198.51.100.20", "2001:db8::/120"]
  autoAssign: false
  avoidBuggyIPs: true
  serviceAllocation:
    priority: 50
    namespaces: [web]
    namespaceSelectors: [{matchLabels: {team: a}}]
    serviceSelectors: [{matchExpressions: [{key: app, operator: In, values: [x]}]}]
status: {assignedIPv4: 3}
`,
		out: `apiVersion: herald.io/v1beta1
kind: IPAddressPool
metadata:
  labels:
    tier: web
  name: pool-a
spec:
  addresses:
  - 192.0.2.0/28
  - 198.51.100.10-198.51.100.20
  - 2001:db8::/120
  autoAssign: false
  avoidBuggyIPs: true
  serviceAllocation:
    namespaceSelectors:
    - matchLabels:
        team: a
    namespaces:
    - web
    priority: 50
    serviceSelectors:
    - matchExpressions:
      - key: app
        operator: In
        values:
        - x
`,
	}, {
		name: "L2Advertisement with preferredNodeSelectors",
		in: `
apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata: {name: l2, namespace: metallb-system}
spec:
  ipAddressPools: [pool-a]
  ipAddressPoolSelectors: [{matchLabels: {tier: web}}]
  nodeSelectors: [{matchLabels: {kubernetes.io/hostname: n1}}]
  interfaces: [eth0]
  preferredNodeSelectors: [{weight: 10, preference: {matchLabels: {rack: r1}}}]
`,
		out: `apiVersion: herald.io/v1beta1
kind: L2Advertisement
metadata:
  name: l2
spec:
  interfaces:
  - eth0
  ipAddressPoolSelectors:
  - matchLabels:
      tier: web
  ipAddressPools:
  - pool-a
  nodeSelectors:
  - matchLabels:
      kubernetes.io/hostname: n1
  preferredNodeSelectors:
  - preference:
      matchLabels:
        rack: r1
    weight: 10
`,
		findings: []want{
			{Warning, "preferredNodeSelectors is carried over but not implemented"},
			{Warning, `spec.ipAddressPools names IPAddressPool "pool-a", which was not among`},
		},
	}, {
		name: "empty L2Advertisement (every pool)",
		in: `
apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata: {name: all, namespace: metallb-system}
`,
		out: `apiVersion: herald.io/v1beta1
kind: L2Advertisement
metadata:
  name: all
spec: {}
`,
	}, {
		name: "BGPAdvertisement, Community alias, peer and pool together",
		in: `
apiVersion: metallb.io/v1beta1
kind: BGPAdvertisement
metadata: {name: adv, namespace: metallb-system}
spec:
  aggregationLength: 24
  aggregationLengthV6: 64
  localPref: 100
  communities: ["65535:65282", "large:1:2:3", no-export]
  ipAddressPools: [pool]
  nodeSelectors: [{matchLabels: {bgp: "yes"}}]
  peers: [tor]
---
apiVersion: metallb.io/v1beta1
kind: Community
metadata: {name: communities, namespace: metallb-system}
spec:
  communities:
  - {name: no-export, value: "65535:65281"}
---
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: pool, namespace: metallb-system}
spec: {addresses: [203.0.113.0/24]}
---
apiVersion: metallb.io/v1beta2
kind: BGPPeer
metadata: {name: tor, namespace: metallb-system}
spec: {myASN: 64512, peerASN: 64500, peerAddress: 10.0.0.1}
`,
		out: `apiVersion: herald.io/v1beta1
kind: Community
metadata:
  name: communities
spec:
  communities:
  - name: no-export
    value: 65535:65281
---
apiVersion: herald.io/v1beta1
kind: BGPPeer
metadata:
  name: tor
spec:
  myASN: 64512
  peerASN: 64500
  peerAddress: 10.0.0.1
---
apiVersion: herald.io/v1beta1
kind: IPAddressPool
metadata:
  name: pool
spec:
  addresses:
  - 203.0.113.0/24
---
apiVersion: herald.io/v1beta1
kind: BGPAdvertisement
metadata:
  name: adv
spec:
  aggregationLength: 24
  aggregationLengthV6: 64
  communities:
  - 65535:65282
  - large:1:2:3
  - no-export
  ipAddressPools:
  - pool
  localPref: 100
  nodeSelectors:
  - matchLabels:
      bgp: "yes"
  peers:
  - tor
`,
	}, {
		name: "BGPPeer v1beta2 with every field Herald has, and a secret to copy",
		in: `
apiVersion: metallb.io/v1beta2
kind: BGPPeer
metadata: {name: r1, namespace: metallb-system}
spec:
  myASN: 64512
  dynamicASN: external
  peerAddress: "2001:db8::1"
  peerPort: 1179
  sourceAddress: "2001:db8::10"
  routerID: 10.1.1.1
  holdTime: 9s
  keepaliveTime: 3s
  connectTime: 5s
  ebgpMultiHop: true
  passwordSecret: {name: bgp-md5, namespace: metallb-system}
  nodeSelectors: [{matchLabels: {rack: a}}]
  bfdProfile: fast
  enableGracefulRestart: true
---
apiVersion: metallb.io/v1beta1
kind: BFDProfile
metadata: {name: fast, namespace: metallb-system}
spec: {receiveInterval: 100, transmitInterval: 100, detectMultiplier: 3, passiveMode: true, minimumTtl: 254}
`,
		out: `apiVersion: herald.io/v1beta1
kind: BFDProfile
metadata:
  name: fast
spec:
  detectMultiplier: 3
  minimumTtl: 254
  passiveMode: true
  receiveInterval: 100
  transmitInterval: 100
---
apiVersion: herald.io/v1beta1
kind: BGPPeer
metadata:
  name: r1
spec:
  bfdProfile: fast
  connectTime: 5s
  dynamicASN: external
  ebgpMultiHop: true
  enableGracefulRestart: true
  holdTime: 9s
  keepaliveTime: 3s
  myASN: 64512
  nodeSelectors:
  - matchLabels:
      rack: a
  passwordSecret:
    name: bgp-md5
  peerAddress: 2001:db8::1
  peerPort: 1179
  routerID: 10.1.1.1
  sourceAddress: 2001:db8::10
`,
		findings: []want{{Warning, "kubectl get secret -n metallb-system bgp-md5"}},
	}, {
		name: "BGPPeer v1beta1 with FRR-only fields",
		in: `
apiVersion: metallb.io/v1beta1
kind: BGPPeer
metadata: {name: old, namespace: metallb-system}
spec: {myASN: 1, peerASN: 2, peerAddress: 192.0.2.1, password: s3cret, vrf: red, disableMP: true, dualStackAddressFamily: true}
`,
		out: `apiVersion: herald.io/v1beta1
kind: BGPPeer
metadata:
  name: old
spec:
  myASN: 1
  password: s3cret
  peerASN: 2
  peerAddress: 192.0.2.1
  vrf: red
`,
		findings: []want{
			{Warning, "password is carried over in clear text"},
			{Warning, "spec.vrf is carried over but not implemented"},
			{Warning, "disableMP has no Herald equivalent"},
			{Warning, "define one BGPPeer per family"},
		},
	}, {
		name: "BGPPeer by interface only cannot be translated",
		in: `
apiVersion: metallb.io/v1beta2
kind: BGPPeer
metadata: {name: unnumbered, namespace: metallb-system}
spec: {myASN: 1, peerASN: 2, interface: eth1}
`,
		findings: []want{{Untranslated, "BGP unnumbered"}},
	}, {
		name: "BGPPeer with both ASNs",
		in: `
apiVersion: metallb.io/v1beta2
kind: BGPPeer
metadata: {name: both, namespace: metallb-system}
spec: {myASN: 1, peerASN: 2, dynamicASN: internal, peerAddress: 192.0.2.1}
`,
		findings: []want{{Untranslated, "exactly one of peerASN and dynamicASN"}},
	}, {
		name: "BFDProfile with echo",
		in: `
apiVersion: metallb.io/v1beta1
kind: BFDProfile
metadata: {name: echo, namespace: metallb-system}
spec: {echoMode: true, echoInterval: 50}
`,
		out: `apiVersion: herald.io/v1beta1
kind: BFDProfile
metadata:
  name: echo
spec:
  echoInterval: 50
  echoMode: true
`,
		findings: []want{{Warning, "echoMode is carried over but not implemented"}},
	}, {
		name: "unknown field is reported, the rest translated",
		in: `
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: p, namespace: metallb-system}
spec: {addresses: [192.0.2.0/24], futureKnob: 3}
`,
		out: `apiVersion: herald.io/v1beta1
kind: IPAddressPool
metadata:
  name: p
spec:
  addresses:
  - 192.0.2.0/24
`,
		findings: []want{{Untranslated, `unknown field "futureKnob"`}},
	}, {
		name: "malformed spec is untranslated with the reason",
		in: `
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: p, namespace: metallb-system}
spec: {addresses: "192.0.2.0/24"}
`,
		findings: []want{{Untranslated, "cannot read spec"}},
	}, {
		name: "same name in two namespaces",
		in: `
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: p, namespace: a}
spec: {addresses: [192.0.2.0/24]}
---
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: p, namespace: b}
spec: {addresses: [198.51.100.0/24]}
`,
		out: `apiVersion: herald.io/v1beta1
kind: IPAddressPool
metadata:
  name: p
spec:
  addresses:
  - 192.0.2.0/24
`,
		findings: []want{{Untranslated, "cluster-scoped"}},
	}, {
		name: "Services with both annotation prefixes need no change",
		in: `
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
  annotations:
    metallb.universe.tf/address-pool: pool-a
    metallb.universe.tf/loadBalancerIPs: 192.0.2.5
    metallb.universe.tf/ip-allocated-from-pool: pool-a
spec: {type: LoadBalancer}
---
apiVersion: v1
kind: Service
metadata:
  name: api
  namespace: shop
  annotations:
    metallb.io/address-pool: pool-a
    metallb.io/loadBalancerIPs: 192.0.2.6
    metallb.io/allow-shared-ip: k1
    metallb.io/some-future-thing: "x"
spec: {type: LoadBalancer}
---
apiVersion: v1
kind: Service
metadata: {name: internal, namespace: shop, annotations: {metallb.io/address-pool: x}}
spec: {type: ClusterIP}
`,
		findings: []want{
			{Note, "no change needed: Herald reads metallb.universe.tf/address-pool (as herald.io/address-pool), metallb.universe.tf/loadBalancerIPs (as herald.io/loadBalancerIPs) as they are"},
			{Note, "no change needed: Herald reads metallb.io/address-pool (as herald.io/address-pool), metallb.io/allow-shared-ip (as herald.io/allow-shared-ip), metallb.io/loadBalancerIPs (as herald.io/loadBalancerIPs) as they are"},
			{Warning, "Herald does not read metallb.io/some-future-thing"},
		},
	}, {
		name: "sharing across namespaces and a foreign class",
		in: `
apiVersion: v1
kind: Service
metadata: {name: a, namespace: n1, annotations: {metallb.universe.tf/allow-shared-ip: dns}}
spec: {type: LoadBalancer, loadBalancerClass: metallb.io/metallb}
---
apiVersion: v1
kind: Service
metadata: {name: b, namespace: n2, annotations: {metallb.io/allow-shared-ip: dns}}
spec: {type: LoadBalancer}
`,
		findings: []want{
			{Note, "no change needed"},
			{Warning, "Services of different namespaces use this key (n1/a, n2/b)"},
			{Warning, `install Herald with --set loadBalancerClass=metallb.io/metallb`},
		},
	}, {
		name: "status kinds, FRR configuration, legacy ConfigMap, unknown kinds",
		in: `
apiVersion: metallb.io/v1beta1
kind: ServiceL2Status
metadata: {name: l2-abc, namespace: metallb-system}
---
apiVersion: frrk8s.metallb.io/v1beta1
kind: FRRConfiguration
metadata: {name: f, namespace: metallb-system}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: config, namespace: metallb-system}
data: {config: "address-pools:\n- name: default\n"}
---
apiVersion: metallb.io/v1alpha9
kind: Gizmo
metadata: {name: g}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: d}
`,
		findings: []want{
			{Note, "Herald reports the same in SpeakerStatus"},
			{Untranslated, "FRR-K8s configuration"},
			{Untranslated, "configmaptocrs"},
			{Untranslated, `unknown MetalLB kind "Gizmo"`},
			{Note, "not a MetalLB object; ignored"},
		},
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res := translateYAML(t, tc.in)
			out, err := res.YAML()
			if err != nil {
				t.Fatal(err)
			}
			if string(out) != tc.out {
				t.Errorf("YAML:\n%s\nwant:\n%s", out, tc.out)
			}
			matched := make([]bool, len(res.Findings))
			for _, w := range tc.findings {
				found := false
				for i, f := range res.Findings {
					if f.Severity == w.sev && strings.Contains(f.Message, w.text) {
						found, matched[i] = true, true
					}
				}
				if !found {
					t.Errorf("no %s finding containing %q; findings:\n%s", w.sev, w.text, findingsText(res.Findings))
				}
			}
			for i, f := range res.Findings {
				if !matched[i] && f.Severity != Note {
					t.Errorf("unexpected finding: %s", f)
				}
			}
		})
	}
}

func findingsText(fs []Finding) string {
	var b strings.Builder
	for _, f := range fs {
		b.WriteString("  " + f.String() + "\n")
	}
	return b.String()
}

// TestFindingsNameTheirObjectAndSource checks that a finding tells the user where to look.
func TestFindingsNameTheirObjectAndSource(t *testing.T) {
	res := translateYAML(t, `
apiVersion: metallb.io/v1beta1
kind: BFDProfile
metadata: {name: echo, namespace: metallb-system}
spec: {echoMode: true}
`)
	if len(res.Findings) != 1 {
		t.Fatalf("findings: %v", res.Findings)
	}
	if got, want := res.Findings[0].Object, "metallb.io/v1beta1 BFDProfile metallb-system/echo (test.yaml, document 1)"; got != want {
		t.Errorf("Object = %q, want %q", got, want)
	}
}
