// Package migrate translates MetalLB's configuration into Herald's: pure functions from MetalLB's
// custom resources (metallb.io) to herald.io/v1beta1 objects, with a finding for everything that
// does not carry over as-is and what to do about it by hand. Reading the objects, from files or a
// cluster, is in load.go.
package migrate

import (
	"fmt"
	"sort"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/yaml"

	"github.com/heraldlb/herald/config"
	"github.com/heraldlb/herald/config/v1beta1"
)

// MetalLBGroup is the API group of MetalLB's custom resources.
const MetalLBGroup = "metallb.io"

// Input is one object read from a file or a cluster.
type Input struct {
	Object unstructured.Unstructured
	// Source says where it was read ("pools.yaml, document 2", "cluster"), for findings.
	Source string
}

// Options tune the translation.
type Options struct {
	// LoadBalancerClass is the spec.loadBalancerClass Herald will be installed with; Services of
	// another class are reported. Empty means config.DefaultLoadBalancerClass.
	LoadBalancerClass string
}

// Severity says how much a finding needs the user.
type Severity int

const (
	// Note: nothing to do; said so the user knows it was looked at (e.g. Services keep working).
	Note Severity = iota
	// Warning: translated, but behaviour differs or a manual step is needed.
	Warning
	// Untranslated: nothing was produced for this object or field; the message says what to do.
	Untranslated
)

func (s Severity) String() string {
	switch s {
	case Note:
		return "note"
	case Warning:
		return "warning"
	default:
		return "untranslated"
	}
}

// Finding is one thing the user should know about the translation.
type Finding struct {
	Severity Severity
	// Object names the input: "metallb.io/v1beta1 IPAddressPool metallb-system/pool-a (pools.yaml, document 1)".
	Object string
	// Message says what is different and what to do by hand.
	Message string
}

func (f Finding) String() string { return fmt.Sprintf("%s: %s: %s", f.Severity, f.Object, f.Message) }

// Result is the translation of a set of inputs.
type Result struct {
	// Objects are the Herald objects, ordered so that referenced kinds come first (BFD profiles and
	// communities before peers, pools before advertisements).
	Objects []runtime.Object
	// Findings are ordered by severity, most severe first, then by object.
	Findings []Finding
}

// Translate turns MetalLB objects into Herald objects. Inputs that are not MetalLB's (Services,
// other kinds) are looked at for what the switch means for them and otherwise ignored.
func Translate(inputs []Input, opts Options) Result {
	if opts.LoadBalancerClass == "" {
		opts.LoadBalancerClass = config.DefaultLoadBalancerClass
	}
	t := translator{opts: opts, made: map[string]string{}}
	for _, in := range inputs {
		t.translate(in)
	}
	t.checkReferences()
	t.checkSharing()
	sort.SliceStable(t.objects, func(i, j int) bool {
		ki, kj := kindOrder(t.objects[i]), kindOrder(t.objects[j])
		if ki != kj {
			return ki < kj
		}
		return nameOf(t.objects[i]) < nameOf(t.objects[j])
	})
	sort.SliceStable(t.findings, func(i, j int) bool {
		if t.findings[i].Severity != t.findings[j].Severity {
			return t.findings[i].Severity > t.findings[j].Severity
		}
		return t.findings[i].Object < t.findings[j].Object
	})
	return Result{Objects: t.objects, Findings: t.findings}
}

// translator accumulates the output of one Translate call.
type translator struct {
	opts     Options
	objects  []runtime.Object
	findings []Finding
	// made maps "Kind/name" of each Herald object made to the input it came from, to catch two
	// namespaced MetalLB objects that would become the same cluster-scoped Herald object.
	made map[string]string
	// sharing maps each allow-shared-ip key to the namespaces of the Services using it.
	sharing map[string]map[string][]string
}

func (t *translator) add(sev Severity, in Input, format string, args ...any) {
	t.findings = append(t.findings, Finding{Severity: sev, Object: describe(in), Message: fmt.Sprintf(format, args...)})
}

func describe(in Input) string {
	o := &in.Object
	name := o.GetName()
	if ns := o.GetNamespace(); ns != "" {
		name = ns + "/" + name
	}
	s := strings.TrimSpace(o.GetAPIVersion() + " " + o.GetKind() + " " + name)
	if in.Source != "" {
		s += " (" + in.Source + ")"
	}
	return s
}

func (t *translator) translate(in Input) {
	gvk := in.Object.GroupVersionKind()
	switch {
	case gvk.Group == MetalLBGroup:
		t.translateMetalLB(in, gvk)
	case gvk.Group == "frrk8s.metallb.io":
		t.add(Untranslated, in, "FRR-K8s configuration is raw FRR routing configuration, which Herald has no equivalent for; "+
			"express the sessions as BGPPeer objects and the routes as BGPAdvertisements (see docs/migrating-from-metallb.md)")
	case gvk.Group == "" && gvk.Kind == "Service":
		t.checkService(in)
	case gvk.Group == "" && gvk.Kind == "ConfigMap" && strings.Contains(fmt.Sprint(in.Object.Object["data"]), "address-pools"):
		t.add(Untranslated, in, "this looks like MetalLB's ConfigMap configuration (MetalLB before v0.13), which is not read; "+
			"convert it to MetalLB's custom resources first (MetalLB's configmaptocrs tool), then run this again on them")
	default:
		t.add(Note, in, "not a MetalLB object; ignored")
	}
}

func (t *translator) translateMetalLB(in Input, gvk schema.GroupVersionKind) {
	var out runtime.Object
	switch gvk.Kind {
	case "IPAddressPool":
		var spec metallbPoolSpec
		if t.decodeSpec(in, &spec) {
			out = t.pool(in, spec)
		}
	case "L2Advertisement":
		var spec metallbL2AdvertisementSpec
		if t.decodeSpec(in, &spec) {
			out = t.l2Advertisement(in, spec)
		}
	case "BGPAdvertisement":
		var spec metallbBGPAdvertisementSpec
		if t.decodeSpec(in, &spec) {
			out = t.bgpAdvertisement(in, spec)
		}
	case "BGPPeer":
		var spec metallbBGPPeerSpec
		if t.decodeSpec(in, &spec) {
			out = t.bgpPeer(in, spec)
		}
	case "Community":
		var spec metallbCommunitySpec
		if t.decodeSpec(in, &spec) {
			out = t.community(in, spec)
		}
	case "BFDProfile":
		var spec metallbBFDProfileSpec
		if t.decodeSpec(in, &spec) {
			out = t.bfdProfile(in, spec)
		}
	case "ServiceL2Status", "ServiceBGPStatus", "BGPSessionState", "ServiceBGPStatusList":
		t.add(Note, in, "status written by MetalLB; Herald reports the same in SpeakerStatus objects (heraldctl status); nothing to translate")
		return
	default:
		t.add(Untranslated, in, "unknown MetalLB kind %q; Herald translates IPAddressPool, L2Advertisement, BGPAdvertisement, "+
			"BGPPeer, Community and BFDProfile; configure its equivalent by hand (see docs/crds.md)", gvk.Kind)
		return
	}
	if out == nil {
		return
	}
	key := out.GetObjectKind().GroupVersionKind().Kind + "/" + nameOf(out)
	if first, dup := t.made[key]; dup {
		t.add(Untranslated, in, "Herald's %s objects are cluster-scoped and %s already became %s; "+
			"rename one of the two MetalLB objects (and what refers to it), then run this again", kindOf(out), first, key)
		return
	}
	t.made[key] = describe(in)
	t.objects = append(t.objects, out)
}

// decodeSpec reads the input's spec into a MetalLB spec type. Fields the type does not know are
// reported (they would otherwise vanish without a word); a spec that cannot be read at all is
// reported as untranslated and false returned.
func (t *translator) decodeSpec(in Input, spec any) bool {
	raw, _, err := unstructured.NestedMap(in.Object.Object, "spec")
	if err != nil {
		t.add(Untranslated, in, "spec is not an object (%v); fix the manifest", err)
		return false
	}
	err = runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(raw, spec, true)
	if strict, ok := runtime.AsStrictDecodingError(err); ok {
		for _, e := range strict.Errors() {
			t.add(Untranslated, in, "spec: %v: Herald does not know this MetalLB field, so it was left out; "+
				"check whether your MetalLB version documents it and configure its effect by hand", e)
		}
		return true
	}
	if err != nil {
		t.add(Untranslated, in, "cannot read spec: %v; fix the manifest (compare with MetalLB's API reference) and run this again", err)
		return false
	}
	return true
}

// meta carries the name and labels over: labels matter, since advertisements and pools select by them.
func meta(in Input) metav1.ObjectMeta {
	return metav1.ObjectMeta{Name: in.Object.GetName(), Labels: in.Object.GetLabels()}
}

func typeMeta(kind string) metav1.TypeMeta {
	return metav1.TypeMeta{APIVersion: v1beta1.GroupVersion.String(), Kind: kind}
}

func (t *translator) pool(in Input, s metallbPoolSpec) runtime.Object {
	if len(s.Addresses) == 0 {
		t.add(Untranslated, in, "spec.addresses is empty; a pool needs at least one CIDR or range")
		return nil
	}
	p := &v1beta1.IPAddressPool{TypeMeta: typeMeta("IPAddressPool"), ObjectMeta: meta(in)}
	for _, a := range s.Addresses {
		p.Spec.Addresses = append(p.Spec.Addresses, v1beta1.AddressBlock(a))
	}
	p.Spec.AutoAssign = s.AutoAssign
	p.Spec.AvoidBuggyIPs = s.AvoidBuggyIPs
	if a := s.ServiceAllocation; a != nil {
		p.Spec.ServiceAllocation = &v1beta1.ServiceAllocation{
			Priority: int32(a.Priority), Namespaces: a.Namespaces,
			NamespaceSelectors: a.NamespaceSelectors, ServiceSelectors: a.ServiceSelectors,
		}
	}
	return p
}

func (t *translator) l2Advertisement(in Input, s metallbL2AdvertisementSpec) runtime.Object {
	a := &v1beta1.L2Advertisement{TypeMeta: typeMeta("L2Advertisement"), ObjectMeta: meta(in)}
	a.Spec.AdvertisementSelection = v1beta1.AdvertisementSelection{
		IPAddressPools: s.IPAddressPools, IPAddressPoolSelectors: s.IPAddressPoolSelectors,
		NodeSelectors: s.NodeSelectors, ServiceSelectors: s.ServiceSelectors,
	}
	a.Spec.Interfaces = s.Interfaces
	for _, p := range s.PreferredNodeSelectors {
		a.Spec.PreferredNodeSelectors = append(a.Spec.PreferredNodeSelectors,
			v1beta1.PreferredNodeSelector{Weight: p.Weight, Preference: p.Preference})
	}
	if len(s.PreferredNodeSelectors) > 0 {
		t.add(Warning, in, "spec.preferredNodeSelectors is carried over but not implemented by Herald yet (the object gets "+
			"a NotSupported condition): any eligible node may announce; use nodeSelectors to restrict announcing nodes")
	}
	return a
}

func (t *translator) bgpAdvertisement(in Input, s metallbBGPAdvertisementSpec) runtime.Object {
	a := &v1beta1.BGPAdvertisement{TypeMeta: typeMeta("BGPAdvertisement"), ObjectMeta: meta(in)}
	a.Spec.AdvertisementSelection = v1beta1.AdvertisementSelection{
		IPAddressPools: s.IPAddressPools, IPAddressPoolSelectors: s.IPAddressPoolSelectors,
		NodeSelectors: s.NodeSelectors, ServiceSelectors: s.ServiceSelectors,
	}
	a.Spec.AggregationLength = s.AggregationLength
	a.Spec.AggregationLengthV6 = s.AggregationLengthV6
	if s.LocalPref != 0 {
		lp := int64(s.LocalPref)
		a.Spec.LocalPref = &lp
	}
	a.Spec.Communities = s.Communities
	a.Spec.Peers = s.Peers
	return a
}

func (t *translator) bgpPeer(in Input, s metallbBGPPeerSpec) runtime.Object {
	if s.PeerAddress == "" {
		if s.Interface != "" {
			t.add(Untranslated, in, "spec.interface (BGP unnumbered, peering by interface) is not supported by Herald; "+
				"peer with the router's address instead (spec.peerAddress)")
		} else {
			t.add(Untranslated, in, "spec.peerAddress is empty; set the router's address")
		}
		return nil
	}
	if s.MyASN == 0 || (s.PeerASN == 0) == (s.DynamicASN == "") {
		t.add(Untranslated, in, "a peer needs myASN and exactly one of peerASN and dynamicASN (got myASN=%d, peerASN=%d, dynamicASN=%q); fix it in MetalLB's object first",
			s.MyASN, s.PeerASN, s.DynamicASN)
		return nil
	}
	p := &v1beta1.BGPPeer{TypeMeta: typeMeta("BGPPeer"), ObjectMeta: meta(in)}
	p.Spec = v1beta1.BGPPeerSpec{
		MyASN: int64(s.MyASN), PeerASN: int64(s.PeerASN), DynamicASN: s.DynamicASN,
		PeerAddress: s.PeerAddress, PeerPort: int32(s.PeerPort), SourceAddress: s.SourceAddress,
		RouterID: s.RouterID, HoldTime: s.HoldTime, KeepaliveTime: s.KeepaliveTime,
		ConnectTime: s.ConnectTime, EBGPMultiHop: s.EBGPMultiHop, Password: s.Password,
		NodeSelectors: s.NodeSelectors, BFDProfile: s.BFDProfile,
		EnableGracefulRestart: s.EnableGracefulRestart, VRF: s.VRFName,
	}
	if s.PasswordSecret.Name != "" {
		// MetalLB reads the Secret from its own namespace; Herald from the one it runs in.
		p.Spec.PasswordSecret = &v1beta1.SecretReference{Name: s.PasswordSecret.Name}
		from := s.PasswordSecret.Namespace
		if from == "" {
			from = in.Object.GetNamespace()
		}
		t.add(Warning, in, "spec.passwordSecret now refers to Secret %q in the namespace Herald runs in (herald-system by default); "+
			"copy it there: kubectl get secret -n %s %s -o yaml | sed '/namespace:/d;/uid:/d;/resourceVersion:/d;/creationTimestamp:/d' | kubectl apply -n herald-system -f -",
			s.PasswordSecret.Name, orUnknown(from), s.PasswordSecret.Name)
	}
	if s.Password != "" {
		t.add(Warning, in, "spec.password is carried over in clear text; consider a passwordSecret instead")
	}
	if s.VRFName != "" {
		t.add(Warning, in, "spec.vrf is carried over but not implemented by Herald yet (the object gets a NotSupported "+
			"condition): the session is opened from the default VRF")
	}
	if s.DisableMP {
		t.add(Warning, in, "spec.disableMP has no Herald equivalent and was left out; check that the router accepts the "+
			"address families Herald's speaker (GoBGP) negotiates")
	}
	if s.DualStackAddressFamily {
		t.add(Warning, in, "spec.dualStackAddressFamily has no Herald equivalent and was left out; to advertise both "+
			"families, define one BGPPeer per family (one IPv4 and one IPv6 peer address)")
	}
	if s.Interface != "" {
		t.add(Warning, in, "spec.interface (BGP unnumbered) is not supported and was left out; the session uses spec.peerAddress")
	}
	return p
}

func orUnknown(ns string) string {
	if ns == "" {
		return "<metallb-namespace>"
	}
	return ns
}

func (t *translator) community(in Input, s metallbCommunitySpec) runtime.Object {
	c := &v1beta1.Community{TypeMeta: typeMeta("Community"), ObjectMeta: meta(in)}
	for _, a := range s.Communities {
		c.Spec.Communities = append(c.Spec.Communities, v1beta1.CommunityAlias{Name: a.Name, Value: a.Value})
	}
	return c
}

func (t *translator) bfdProfile(in Input, s metallbBFDProfileSpec) runtime.Object {
	p := &v1beta1.BFDProfile{TypeMeta: typeMeta("BFDProfile"), ObjectMeta: meta(in)}
	p.Spec.ReceiveInterval = int32Ptr(s.ReceiveInterval)
	p.Spec.TransmitInterval = int32Ptr(s.TransmitInterval)
	p.Spec.DetectMultiplier = int32Ptr(s.DetectMultiplier)
	p.Spec.MinimumTTL = int32Ptr(s.MinimumTTL)
	p.Spec.EchoInterval = int32Ptr(s.EchoInterval)
	p.Spec.PassiveMode = s.PassiveMode != nil && *s.PassiveMode
	p.Spec.EchoMode = s.EchoMode != nil && *s.EchoMode
	if p.Spec.EchoMode {
		t.add(Warning, in, "spec.echoMode is carried over but not implemented by Herald yet (the object gets a NotSupported "+
			"condition): sessions run in asynchronous mode with the receive/transmit intervals")
	}
	return p
}

func int32Ptr(v *uint32) *int32 {
	if v == nil {
		return nil
	}
	i := int32(*v)
	return &i
}

// checkService says what the switch means for a Service: MetalLB's annotations Herald reads as
// aliases need no change; others are not read; a foreign load balancer class is not Herald's.
func (t *translator) checkService(in Input) {
	svc := &in.Object
	if typ, _, _ := unstructured.NestedString(svc.Object, "spec", "type"); typ != "LoadBalancer" {
		return
	}
	var aliased, ignored []string
	for key, value := range svc.GetAnnotations() {
		if !strings.HasPrefix(key, "metallb.universe.tf/") && !strings.HasPrefix(key, "metallb.io/") {
			continue
		}
		if name := heraldNameFor(key, value); name != "" {
			aliased = append(aliased, key+" (as "+name+")")
			if name == config.AnnotationAllowSharedIP {
				t.recordSharing(value, svc.GetNamespace(), svc.GetName())
			}
		} else if !strings.HasSuffix(key, "/ip-allocated-from-pool") {
			ignored = append(ignored, key)
		}
	}
	sort.Strings(aliased)
	sort.Strings(ignored)
	if len(aliased) > 0 {
		t.add(Note, in, "no change needed: Herald reads %s as they are", strings.Join(aliased, ", "))
	}
	if len(ignored) > 0 {
		t.add(Warning, in, "Herald does not read %s; see docs/annotations.md for what Herald offers instead", strings.Join(ignored, ", "))
	}
	class, _, _ := unstructured.NestedString(svc.Object, "spec", "loadBalancerClass")
	if class != "" && class != t.opts.LoadBalancerClass {
		t.add(Warning, in, "spec.loadBalancerClass is %q but Herald is to handle %q; the class cannot be changed on an existing "+
			"Service, so install Herald with --set loadBalancerClass=%s (controller flag --lb-class)", class, t.opts.LoadBalancerClass, class)
	}
}

// heraldNameFor returns the Herald annotation a MetalLB annotation is read as, or "".
func heraldNameFor(key, value string) string {
	for _, name := range []string{config.AnnotationAddressPool, config.AnnotationLoadBalancerIPs, config.AnnotationAllowSharedIP} {
		if _, from := config.Annotation(map[string]string{key: value}, name); from == key {
			return name
		}
	}
	return ""
}

func (t *translator) recordSharing(key, namespace, name string) {
	if t.sharing == nil {
		t.sharing = map[string]map[string][]string{}
	}
	if t.sharing[key] == nil {
		t.sharing[key] = map[string][]string{}
	}
	t.sharing[key][namespace] = append(t.sharing[key][namespace], namespace+"/"+name)
}

// checkSharing reports sharing keys used across namespaces: MetalLB lets those Services share an
// IP, Herald only when the pool says allowCrossNamespaceSharing.
func (t *translator) checkSharing() {
	keys := make([]string, 0, len(t.sharing))
	for k := range t.sharing {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if len(t.sharing[k]) < 2 {
			continue
		}
		var svcs []string
		for _, names := range t.sharing[k] {
			svcs = append(svcs, names...)
		}
		sort.Strings(svcs)
		t.findings = append(t.findings, Finding{Severity: Warning, Object: "allow-shared-ip key " + k,
			Message: fmt.Sprintf("Services of different namespaces use this key (%s); Herald lets them share an IP only if "+
				"their pool sets spec.allowCrossNamespaceSharing: true; set it on that pool or they get different IPs", strings.Join(svcs, ", "))})
	}
}

// checkReferences reports references to objects that were not among the inputs: the Herald
// object would be marked Valid=False until they exist.
func (t *translator) checkReferences() {
	have := map[string]bool{}
	aliases := map[string]bool{}
	for _, o := range t.objects {
		have[kindOf(o)+"/"+nameOf(o)] = true
		if c, ok := o.(*v1beta1.Community); ok {
			for _, a := range c.Spec.Communities {
				aliases[a.Name] = true
			}
		}
	}
	missing := func(obj runtime.Object, field, kind string, names ...string) {
		for _, n := range names {
			if n != "" && !have[kind+"/"+n] {
				t.findings = append(t.findings, Finding{Severity: Warning, Object: kindOf(obj) + " " + nameOf(obj),
					Message: fmt.Sprintf("%s names %s %q, which was not among the MetalLB objects read; create it, or the object is marked Valid=False", field, kind, n)})
			}
		}
	}
	for _, o := range t.objects {
		switch o := o.(type) {
		case *v1beta1.BGPPeer:
			missing(o, "spec.bfdProfile", "BFDProfile", o.Spec.BFDProfile)
		case *v1beta1.L2Advertisement:
			missing(o, "spec.ipAddressPools", "IPAddressPool", o.Spec.IPAddressPools...)
		case *v1beta1.BGPAdvertisement:
			missing(o, "spec.ipAddressPools", "IPAddressPool", o.Spec.IPAddressPools...)
			missing(o, "spec.peers", "BGPPeer", o.Spec.Peers...)
			for _, c := range o.Spec.Communities {
				if !strings.Contains(c, ":") && !aliases[c] {
					t.findings = append(t.findings, Finding{Severity: Warning, Object: kindOf(o) + " " + nameOf(o),
						Message: fmt.Sprintf("spec.communities names alias %q, which no Community object read defines; define it or use its value", c)})
				}
			}
		}
	}
}

var kindRank = map[string]int{"BFDProfile": 0, "Community": 1, "BGPPeer": 2, "IPAddressPool": 3, "L2Advertisement": 4, "BGPAdvertisement": 5}

func kindOrder(o runtime.Object) int { return kindRank[kindOf(o)] }
func kindOf(o runtime.Object) string { return o.GetObjectKind().GroupVersionKind().Kind }
func nameOf(o runtime.Object) string { return o.(metav1.Object).GetName() }

// YAML renders the objects as a multi-document YAML stream ready for kubectl apply: without status
// or server-set metadata.
func (r Result) YAML() ([]byte, error) {
	var b strings.Builder
	for i, o := range r.Objects {
		u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(o)
		if err != nil {
			return nil, err
		}
		delete(u, "status")
		unstructured.RemoveNestedField(u, "metadata", "creationTimestamp")
		doc, err := yaml.Marshal(u)
		if err != nil {
			return nil, err
		}
		if i > 0 {
			b.WriteString("---\n")
		}
		b.Write(doc)
	}
	return []byte(b.String()), nil
}
