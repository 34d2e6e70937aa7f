package lab

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/heraldlb/herald/charts"
	"github.com/heraldlb/herald/e2e/proc"
)

// start runs argv inside host's namespace under role, logging to logs/<role>.log.
func (l *Lab) start(role string, host *Host, env []string, argv ...string) error {
	return l.startRaw(role, env, inNetns(host.Netns, argv...)...)
}

// startRaw runs argv as it is under role, logging to logs/<role>.log.
func (l *Lab) startRaw(role string, env []string, argv ...string) error {
	logName := filepath.Join(l.Dir, "logs", filepath.Base(role)+".log")
	if filepath.Dir(role) != "." {
		logName = filepath.Join(l.Dir, "logs", filepath.Dir(role)+"-"+filepath.Base(role)+".log")
	}
	p, err := proc.Start(role, argv, logName, env)
	if err != nil {
		return err
	}
	l.Processes[role] = p
	return l.save()
}

func (l *Lab) startBackend(pod *Host) error {
	argv := append(append([]string{}, l.Backend...), BackendCommand, "--name", pod.Name, "--node", pod.Node)
	return l.start(BackendRole(pod.Name), pod, nil, argv...)
}

func (l *Lab) startBird(ctx context.Context) error {
	conf, err := renderBirdConf(l.Topology, l.Dir)
	if err != nil {
		return err
	}
	confPath := filepath.Join(l.Dir, "bird.conf")
	if err := os.WriteFile(confPath, conf, 0o644); err != nil {
		return err
	}
	// -f: stay in the foreground, so the pid we record is BIRD's own.
	if err := l.start(RoleBird, l.Topology.Host(HostRouter), nil, "bird", "-f", "-c", confPath,
		"-s", l.BirdSocket, "-P", filepath.Join(l.Dir, "bird.pid")); err != nil {
		return err
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := l.Birdc(ctx, "show", "status"); err == nil {
			return nil
		} else if time.Now().After(deadline) || !l.Processes[RoleBird].Alive() {
			return fmt.Errorf("BIRD did not start: %w\n%s", err, l.Processes[RoleBird].Tail(2000))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// StartController starts the Herald controller (bin/controller) in the control plane's namespace
// as the chart's controller container runs it (chart.go), replacing a running one.
func (l *Lab) StartController() error {
	if p, ok := l.Processes[RoleController]; ok {
		_ = p.Stop(5 * time.Second)
	}
	return l.startFromChart(RoleController, l.Topology.Host(HostControlPlane), &l.Chart.Controller, "controller", "")
}

// StartSpeaker starts the speaker (bin/speaker) of a node inside the node as the chart's speaker
// pod runs it (chart.go): its init steps to completion (speaker --prepare-sysctls), then the
// speaker container, replacing a running one.
func (l *Lab) StartSpeaker(ctx context.Context, node string) error {
	h, err := l.node(node)
	if err != nil {
		return err
	}
	if p, ok := l.Processes[SpeakerRole(node)]; ok {
		_ = p.Stop(5 * time.Second)
	}
	for _, c := range l.Chart.Speaker.InitContainers {
		ctx, cancel := context.WithTimeout(ctx, time.Minute)
		out, err := l.runToCompletion(ctx, h, &l.Chart.Speaker, c.Name, node)
		cancel()
		if err != nil {
			return fmt.Errorf("speaker of %s: init step %s: %w\n%s", node, c.Name, err, out)
		}
	}
	return l.startFromChart(SpeakerRole(node), h, &l.Chart.Speaker, "speaker", node)
}

// RenderChart renders the chart again with these values (helm --set KEY=VALUE): the
// controller and speakers started from now on run as it says; running ones are left as they are.
func (l *Lab) RenderChart(values ...string) error {
	w, err := charts.RenderWorkloads(values...)
	if err != nil {
		return fmt.Errorf("rendering the chart (values %v): %w", values, err)
	}
	l.Chart, l.ChartValues = w, values
	return l.save()
}

// startFromChart starts the named container of spec under role in host, for a pod on node.
func (l *Lab) startFromChart(role string, host *Host, spec *corev1.PodSpec, container, node string) error {
	p, err := l.chartProcess(role, spec, container, node)
	if err != nil {
		return err
	}
	return l.start(role, host, p.Env, p.command()...)
}

// chartProcess translates the named container of spec for a pod on node (chart.go) and, when
// the pod would have ServiceAccount credentials, gives it a kubeconfig it can read instead.
func (l *Lab) chartProcess(role string, spec *corev1.PodSpec, container, node string) (process, error) {
	p, err := translate(spec, container, podContext{Node: node, Namespace: HeraldNamespace,
		SecretDir: filepath.Dir(l.SecretFile), BinDir: l.BinDir})
	if err != nil {
		return p, fmt.Errorf("running the chart's %s container in the lab: %w", container, err)
	}
	if spec.AutomountServiceAccountToken != nil && !*spec.AutomountServiceAccountToken {
		return p, nil // no in-cluster credentials: no kubeconfig either
	}
	kc, err := l.kubeconfigFor(role, p.UID)
	if err != nil {
		return p, err
	}
	p.Argv = append(p.Argv, "--kubeconfig="+kc)
	return p, nil
}

// RunCleanupHook runs the chart's uninstall step on a node (the cleanup init container of the
// post-delete hook: speaker --cleanup with the hook's arguments and capabilities) and returns its
// output. Stop the node's speaker first, as the hook waits for it to be gone.
func (l *Lab) RunCleanupHook(ctx context.Context, node string) ([]byte, error) {
	h, err := l.node(node)
	if err != nil {
		return nil, err
	}
	if len(l.Chart.Cleanup.InitContainers) == 0 {
		return nil, fmt.Errorf("the chart renders no cleanup hook (values %v)", l.ChartValues)
	}
	return l.runToCompletion(ctx, h, &l.Chart.Cleanup, "cleanup", node)
}

// runToCompletion runs the named container of spec, for a pod on node, inside host and returns
// its output once it exits.
func (l *Lab) runToCompletion(ctx context.Context, h *Host, spec *corev1.PodSpec, container, node string) ([]byte, error) {
	p, err := l.chartProcess(container+"/"+node, spec, container, node)
	if err != nil {
		return nil, err
	}
	argv := inNetns(h.Netns, p.command()...)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), p.Env...)
	return cmd.CombinedOutput()
}

// SignalSpeaker sends sig to a node's speaker: SIGKILL to kill it, SIGSTOP to freeze it (SIGCONT
// thaws it), SIGTERM for a graceful stop.
func (l *Lab) SignalSpeaker(node string, sig syscall.Signal) error {
	return l.signal(SpeakerRole(node), sig)
}

// SignalKubelet sends sig to a real node's kubelet (lab up --kubelet): SIGSTOP stops it (the node
// goes NotReady once its lease expires), SIGCONT resumes it.
func (l *Lab) SignalKubelet(node string, sig syscall.Signal) error {
	return l.signal(KubeletRole(node), sig)
}

func (l *Lab) signal(role string, sig syscall.Signal) error {
	p, ok := l.Processes[role]
	if !ok {
		return fmt.Errorf("no %s", role)
	}
	return p.Signal(sig)
}

// Speaker returns a node's speaker process.
func (l *Lab) Speaker(node string) (proc.Process, bool) {
	p, ok := l.Processes[SpeakerRole(node)]
	return p, ok
}

func (l *Lab) node(name string) (*Host, error) {
	h, err := l.Host(name)
	if err != nil {
		return nil, err
	}
	if h.Kind != KindNode {
		return nil, fmt.Errorf("%s is not a node", name)
	}
	return h, nil
}

// CutLink takes a host's switch port down: its eth0 loses carrier, as when a cable is pulled.
func (l *Lab) CutLink(ctx context.Context, host string) error {
	return l.switchPort(ctx, host, "ip", "link", "set", "%s", "down")
}

// DropFrames makes the switch silently drop every frame from and to a host while its carrier stays
// up (the bridge port is put in the disabled STP state), as when a node hangs or a switch port
// misbehaves: nothing on the host notices.
func (l *Lab) DropFrames(ctx context.Context, host string) error {
	return l.switchPort(ctx, host, "bridge", "link", "set", "dev", "%s", "state", "0")
}

// RestoreLink undoes CutLink and DropFrames.
func (l *Lab) RestoreLink(ctx context.Context, host string) error {
	if err := l.switchPort(ctx, host, "ip", "link", "set", "%s", "up"); err != nil {
		return err
	}
	return l.switchPort(ctx, host, "bridge", "link", "set", "dev", "%s", "state", "3")
}

// switchPort runs tool (ip or bridge) in the switch's namespace with the host's port name in
// place of "%s".
func (l *Lab) switchPort(ctx context.Context, host string, tool string, args ...string) error {
	h, err := l.Host(host)
	if err != nil {
		return err
	}
	if h.Port == "" {
		return fmt.Errorf("%s is not on the switch", host)
	}
	argv := []string{tool, "-n", l.Topology.Host(HostSwitch).Netns}
	for _, a := range args {
		if a == "%s" {
			a = h.Port
		}
		argv = append(argv, a)
	}
	_, err = run(ctx, "", argv...)
	return err
}
