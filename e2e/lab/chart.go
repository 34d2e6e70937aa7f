package lab

// Herald's controller and speakers run in the lab as the Helm chart runs them: the lab renders
// charts/herald (charts.RenderWorkloads, with Config.ChartValues) and translates each container
// into a process with the same command, arguments, environment and capabilities. What a cluster
// provides and the lab does not is translated:
//
//   - the downward API: spec.nodeName is the lab node's name, metadata.namespace is
//     HeraldNamespace (env values, and $(VAR) references in command and args, expanded as the
//     kubelet does);
//   - volumes: the speakers' key Secret is a directory in the lab holding the lab's key under the
//     same file name; a hostPath is that path itself (lab nodes share the machine's filesystem);
//   - the image: its binaries (ImageBinDir) are those of Config.BinDir;
//   - the in-cluster ServiceAccount: --kubeconfig with the lab's admin kubeconfig is appended;
//   - the security context: a privileged container runs as root with every capability; any other
//     must drop ALL, and runs under setpriv with exactly the capabilities it adds as its bounding
//     set (so also its permitted and effective set), no inheritable ones, no_new_privs when
//     allowPrivilegeEscalation is false, and its runAsUser/runAsGroup.
//
// Not translated: readOnlyRootFilesystem, seccomp, resources, probes (tests ask /healthz and
// /readyz themselves), and the container runtime's own mount of /proc/sys read-only.

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// process is one chart container translated for the lab.
type process struct {
	Argv []string // command and args, references expanded, paths translated
	Env  []string // KEY=VALUE
	// Privileged: root with every capability. Otherwise exactly Caps (e.g. "NET_ADMIN").
	Privileged bool
	Caps       []string
	NoNewPrivs bool
	UID, GID   *int64
}

// podContext is what the lab supplies in place of the cluster for one pod.
type podContext struct {
	Node, Namespace string
	// SecretDir holds the files of the Secret volume (the speakers' key); only one Secret is known.
	SecretDir string
	// BinDir holds the binaries the image has in ImageBinDir.
	BinDir string
}

// ImageBinDir is where Herald's image holds its binaries (docs/contracts.md, Image).
const ImageBinDir = "/usr/local/bin"

// translate turns the named container (or init container) of spec into a lab process.
func translate(spec *corev1.PodSpec, name string, pod podContext) (process, error) {
	var c *corev1.Container
	for _, list := range [][]corev1.Container{spec.Containers, spec.InitContainers} {
		for i := range list {
			if list[i].Name == name {
				c = &list[i]
			}
		}
	}
	if c == nil {
		return process{}, fmt.Errorf("the pod has no container %q", name)
	}
	if len(c.Command) == 0 {
		return process{}, fmt.Errorf("container %s: no command (the lab does not know the image's entrypoint)", name)
	}
	var p process
	vars := map[string]string{}
	for _, e := range c.Env {
		v, err := envValue(e, pod)
		if err != nil {
			return p, fmt.Errorf("container %s: %w", name, err)
		}
		vars[e.Name] = expand(v, vars)
		p.Env = append(p.Env, e.Name+"="+vars[e.Name])
	}
	paths, err := mountPaths(spec, c, pod)
	if err != nil {
		return p, fmt.Errorf("container %s: %w", name, err)
	}
	for _, a := range append(slices.Clone(c.Command), c.Args...) {
		a = expand(a, vars)
		for mount, labPath := range paths {
			if a == mount {
				a = labPath
			}
			a = strings.ReplaceAll(a, mount+"/", labPath+"/")
		}
		p.Argv = append(p.Argv, a)
	}
	if bin, ok := strings.CutPrefix(p.Argv[0], ImageBinDir+"/"); ok {
		p.Argv[0] = filepath.Join(pod.BinDir, bin)
	}
	return p, p.secure(spec.SecurityContext, c.SecurityContext)
}

func envValue(e corev1.EnvVar, pod podContext) (string, error) {
	switch {
	case e.ValueFrom == nil:
		return e.Value, nil
	case e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "spec.nodeName":
		return pod.Node, nil
	case e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.namespace":
		return pod.Namespace, nil
	}
	return "", fmt.Errorf("env %s: the lab cannot supply %+v", e.Name, *e.ValueFrom)
}

// varRef is a $(VAR) reference; $$ escapes a $.
var varRef = regexp.MustCompile(`\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// expand replaces $(VAR) with VAR's value where VAR is defined, as the kubelet does.
func expand(s string, vars map[string]string) string {
	return varRef.ReplaceAllStringFunc(s, func(m string) string {
		if m == "$$" {
			return "$"
		}
		if v, ok := vars[m[2:len(m)-1]]; ok {
			return v
		}
		return m
	})
}

// mountPaths maps the container's mount paths to the lab paths standing for their volumes.
func mountPaths(spec *corev1.PodSpec, c *corev1.Container, pod podContext) (map[string]string, error) {
	paths := map[string]string{}
	for _, m := range c.VolumeMounts {
		i := slices.IndexFunc(spec.Volumes, func(v corev1.Volume) bool { return v.Name == m.Name })
		if i < 0 {
			return nil, fmt.Errorf("mount of an undeclared volume %s", m.Name)
		}
		v := spec.Volumes[i]
		switch {
		case v.Secret != nil:
			paths[m.MountPath] = pod.SecretDir
		case v.HostPath != nil:
			paths[m.MountPath] = v.HostPath.Path
		default:
			return nil, fmt.Errorf("volume %s: the lab supports Secret and hostPath volumes only", v.Name)
		}
	}
	return paths, nil
}

// secure takes the pod's and the container's security contexts (the container's fields win).
func (p *process) secure(pod *corev1.PodSecurityContext, c *corev1.SecurityContext) error {
	if pod != nil {
		p.UID, p.GID = pod.RunAsUser, pod.RunAsGroup
	}
	if c == nil {
		return fmt.Errorf("no security context: the container runtime's default capabilities are not modelled")
	}
	if c.RunAsUser != nil {
		p.UID = c.RunAsUser
	}
	if c.RunAsGroup != nil {
		p.GID = c.RunAsGroup
	}
	if c.Privileged != nil && *c.Privileged {
		p.Privileged = true
		return nil
	}
	if c.Capabilities == nil || !slices.Contains(c.Capabilities.Drop, "ALL") {
		return fmt.Errorf("capabilities do not drop ALL: the container runtime's default set is not modelled")
	}
	for _, add := range c.Capabilities.Add {
		p.Caps = append(p.Caps, string(add))
	}
	p.NoNewPrivs = c.AllowPrivilegeEscalation != nil && !*c.AllowPrivilegeEscalation
	return nil
}

// command is the argv that runs the process with its capabilities and user.
func (p process) command() []string {
	if p.Privileged {
		return p.Argv // as root: the chart runs no privileged container as another user
	}
	caps := "-all"
	for _, c := range p.Caps {
		caps += ",+" + strings.ToLower(c)
	}
	argv := []string{"setpriv", "--bounding-set=" + caps, "--inh-caps=-all"}
	if p.NoNewPrivs {
		argv = append(argv, "--no-new-privs")
	}
	if p.UID != nil {
		gid := *p.UID
		if p.GID != nil {
			gid = *p.GID
		}
		argv = append(argv, "--reuid="+strconv.FormatInt(*p.UID, 10), "--regid="+strconv.FormatInt(gid, 10), "--clear-groups")
	}
	return append(append(argv, "--"), p.Argv...)
}

// kubeconfigFor returns a kubeconfig the process can read: the lab's own when it runs as root,
// else a copy with the certificates embedded, owned by its user, in a directory of its own under
// the system's temporary directory (the lab's directory may not be searchable by that user).
func (l *Lab) kubeconfigFor(role string, uid *int64) (string, error) {
	if uid == nil || *uid == 0 {
		return l.Kubeconfig(), nil
	}
	cfg, err := clientcmd.LoadFromFile(l.Kubeconfig())
	if err != nil {
		return "", err
	}
	if err := clientcmdapi.FlattenConfig(cfg); err != nil {
		return "", err
	}
	dir, err := os.MkdirTemp("", l.Topology.Prefix+filepath.Base(role)+"-")
	if err != nil {
		return "", err
	}
	l.TempDirs = append(l.TempDirs, dir)
	path := filepath.Join(dir, "kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return "", err
	}
	for _, p := range []string{dir, path} {
		if err := os.Chown(p, int(*uid), -1); err != nil {
			return "", err
		}
	}
	return path, nil
}
