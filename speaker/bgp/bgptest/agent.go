package bgptest

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"

	"github.com/heraldlb/herald/speaker/bgp"
)

// The agent is the announcer running in a node's namespace: the test binary (or bench program)
// re-executes itself there with agentEnv set, and RunAgentIfAsked turns it into an agent that takes
// JSON requests on stdin and answers on stdout. On SIGTERM it stops the announcer as the speaker
// does (Cease to every peer, or graceful-restart silence when asked) and exits.
const (
	agentEnv          = "HERALD_BGPT_AGENT"
	agentKeepGREnv    = "HERALD_BGPT_KEEP_GR"
	agentListenEnv    = "HERALD_BGPT_LISTEN"
	agentReadyMessage = "ready"
)

type request struct {
	Op      string       `json:"op"` // apply, status, metrics
	Desired *bgp.Desired `json:"desired,omitempty"`
}

type reply struct {
	Error   string           `json:"error,omitempty"`
	Status  []bgp.PeerStatus `json:"status,omitempty"`
	Metrics string           `json:"metrics,omitempty"`
}

// RunAgentIfAsked runs the agent and exits when this process was started as one; call it first in
// TestMain or main.
func RunAgentIfAsked() {
	if os.Getenv(agentEnv) != "1" {
		return
	}
	os.Exit(runAgent())
}

func runAgent() int {
	level := slog.LevelInfo
	if os.Getenv("HERALD_BGPT_DEBUG") == "1" {
		level = slog.LevelDebug
	}
	opts := bgp.Options{Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))}
	if os.Getenv(agentListenEnv) == "0" {
		opts.ListenPort = -1
	}
	a := bgp.NewAnnouncer(opts)
	keepGR := os.Getenv(agentKeepGREnv) == "1"

	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-term
		a.Stop(context.Background(), keepGR)
		os.Exit(0)
	}()

	out := json.NewEncoder(os.Stdout)
	_ = out.Encode(reply{Error: agentReadyMessage})
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 256<<20)
	for in.Scan() {
		var req request
		var rep reply
		if err := json.Unmarshal(in.Bytes(), &req); err != nil {
			rep.Error = err.Error()
		} else {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			switch req.Op {
			case "apply":
				if err := a.Apply(ctx, *req.Desired); err != nil {
					rep.Error = err.Error()
				}
			case "status":
				st, err := a.Status(ctx)
				rep.Status = st
				if err != nil {
					rep.Error = err.Error()
				}
			case "metrics":
				text, err := testutil.CollectAndFormat(bgp.NewCollector(a), expfmt.TypeTextPlain,
					"herald_bgp_session_up", "herald_bgp_bfd_session_up", "herald_bgp_announced_prefixes",
					"herald_bgp_updates_sent_total", "herald_bgp_updates_received_total")
				rep.Metrics = string(text)
				if err != nil {
					rep.Error = err.Error()
				}
			default:
				rep.Error = "unknown op " + req.Op
			}
			cancel()
		}
		_ = out.Encode(rep)
	}
	// stdin closed: the test went away without a signal; leave like a SIGTERM.
	a.Stop(context.Background(), keepGR)
	return 0
}

// AgentOptions start an agent.
type AgentOptions struct {
	// KeepGracefulRestart makes SIGTERM leave graceful-restart peers without a Cease.
	KeepGracefulRestart bool
	// NoListen keeps GoBGP from accepting connections (it only dials).
	NoListen bool
}

// Agent is a running agent process.
type Agent struct {
	Host Host
	cmd  *exec.Cmd
	mu   sync.Mutex
	in   *json.Encoder
	out  *json.Decoder
	done chan struct{}
}

// StartAgent starts the announcer in host's namespace; this executable must call
// RunAgentIfAsked. The agent's log goes to LogPath(host).
func (t *Topology) StartAgent(host Host, opts AgentOptions) (*Agent, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	logf, err := os.OpenFile(t.LogPath(host), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command("ip", "netns", "exec", host.Netns, self)
	cmd.Env = append(os.Environ(), agentEnv+"=1")
	if opts.KeepGracefulRestart {
		cmd.Env = append(cmd.Env, agentKeepGREnv+"=1")
	}
	if opts.NoListen {
		cmd.Env = append(cmd.Env, agentListenEnv+"=0")
	}
	cmd.Stderr = logf
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	a := &Agent{Host: host, cmd: cmd, in: json.NewEncoder(stdin), out: json.NewDecoder(stdout), done: make(chan struct{})}
	var hello reply
	helloErr := a.out.Decode(&hello)
	if helloErr == nil && hello.Error != agentReadyMessage {
		helloErr = fmt.Errorf("its first reply said %q", hello.Error)
	}
	if helloErr != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, fmt.Errorf("agent in %s did not start: %w (log %s)", host.Netns, helloErr, t.LogPath(host))
	}
	go func() { _ = cmd.Wait(); close(a.done) }()
	return a, nil
}

func (a *Agent) call(req request) (reply, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.in.Encode(req); err != nil {
		return reply{}, err
	}
	var rep reply
	if err := a.out.Decode(&rep); err != nil {
		return reply{}, err
	}
	if rep.Error != "" {
		return rep, errors.New(rep.Error)
	}
	return rep, nil
}

// Apply makes the agent's announcer converge on d; it returns once GoBGP has taken the change.
func (a *Agent) Apply(d bgp.Desired) error {
	_, err := a.call(request{Op: "apply", Desired: &d})
	return err
}

// Status returns the announcer's session states.
func (a *Agent) Status() ([]bgp.PeerStatus, error) {
	rep, err := a.call(request{Op: "status"})
	return rep.Status, err
}

// Metrics returns the announcer's Prometheus metrics in the text format.
func (a *Agent) Metrics() (string, error) {
	rep, err := a.call(request{Op: "metrics"})
	return rep.Metrics, err
}

// PID is the agent's process id (ip netns exec execs in place).
func (a *Agent) PID() int { return a.cmd.Process.Pid }

// Signal sends sig to the agent.
func (a *Agent) Signal(sig syscall.Signal) error { return a.cmd.Process.Signal(sig) }

// Wait waits up to d for the agent to exit.
func (a *Agent) Wait(d time.Duration) bool {
	select {
	case <-a.done:
		return true
	case <-time.After(d):
		return false
	}
}

// Kill ends the agent (continuing it first, should it be stopped) and waits for it.
func (a *Agent) Kill() {
	_ = a.cmd.Process.Signal(syscall.SIGCONT)
	_ = a.cmd.Process.Kill()
	a.Wait(5 * time.Second)
}
