// Package backendspec is the one behaviour spec both data-plane backends (nftables and IPVS) must
// meet, checked with real packets: a test process moves itself into a fresh network namespace that
// plays the node, creates client and backend namespaces behind veth pairs, lets a backend program
// Services, and sends TCP, UDP and SCTP traffic through them.
//
// Every namespace is anonymous (held by file descriptors, never mounted under /run/netns), so all of
// it disappears when the test process exits, even on a crash; the machine's own namespace is never
// touched. The nftables backend runs the suite on the build machine; the IPVS backend runs it inside
// the VM of hack/ipvs-vm, whose kernel has ip_vs.
package backendspec

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"testing"

	"github.com/vishvananda/netns"
)

// nodeNetnsEnv marks a test process that already runs in its own node namespace.
const nodeNetnsEnv = "HERALD_SPEC_NODE_NETNS"

// RunInNodeNetns is for TestMain: it re-executes the test binary under `unshare --net`, so the whole
// process (every thread, and every program it runs, such as nft) lives in a new network namespace
// that plays the node. It returns the exit code to pass to os.Exit. Without root (or unshare) it
// runs the tests in place; the tests needing a namespace then skip or fail by the usual rule.
func RunInNodeNetns(m *testing.M) int {
	if os.Getenv(nodeNetnsEnv) == "1" || os.Geteuid() != 0 {
		return m.Run()
	}
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		fmt.Fprintln(os.Stderr, "backendspec: no unshare binary; running without a node namespace")
		return m.Run()
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "backendspec:", err)
		return 1
	}
	cmd := exec.Command(unshare, append([]string{"-n", "--", self}, os.Args[1:]...)...)
	cmd.Env = append(os.Environ(), nodeNetnsEnv+"=1")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			return exit.ExitCode()
		}
		fmt.Fprintln(os.Stderr, "backendspec:", err)
		return 1
	}
	return 0
}

// InNodeNetns reports whether this process runs in the private node namespace RunInNodeNetns made.
func InNodeNetns() bool { return os.Getenv(nodeNetnsEnv) == "1" }

// newNetns creates an anonymous network namespace without moving the calling goroutine into it.
func newNetns() (netns.NsHandle, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return 0, err
	}
	defer orig.Close()
	ns, err := netns.New() // unshares this thread into the new namespace
	if err != nil {
		return 0, err
	}
	if err := netns.Set(orig); err != nil {
		ns.Close()
		return 0, fmt.Errorf("returning to the node namespace: %w", err)
	}
	return ns, nil
}

// inNetns runs fn on a thread switched into ns; sockets fn creates stay in ns afterwards.
func inNetns(ns netns.NsHandle, fn func() error) error {
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer orig.Close()
	if err := netns.Set(ns); err != nil {
		runtime.UnlockOSThread()
		return err
	}
	fnErr := fn()
	if err := netns.Set(orig); err != nil {
		// The thread is stuck in the wrong namespace: keep it locked so the runtime discards it.
		return fmt.Errorf("returning to the node namespace: %w", err)
	}
	runtime.UnlockOSThread()
	return fnErr
}
