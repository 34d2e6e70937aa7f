// Package proc starts the long-lived processes of the test bed (etcd, kube-apiserver, BIRD, speakers,
// backends) detached from the caller, and stops them again by pid.
//
// A process is identified by its pid plus its kernel start time, so a pid that the kernel has reused
// for something else after our process died is never signalled: `lab down` may run hours later, from
// another shell, with only state.json to go by.
package proc

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Process is a started process as recorded in the lab's state.
type Process struct {
	Name  string   `json:"name"`
	PID   int      `json:"pid"`
	Start uint64   `json:"start"` // field 22 of /proc/PID/stat: clock ticks since boot
	Args  []string `json:"args"`
	Log   string   `json:"log"`
}

// Start runs argv in a session of its own (so a Ctrl-C in the shell that ran `lab up` does not reach
// it), with stdout and stderr appended to logPath. It does not wait for the process: a goroutine
// reaps it if it exits while the caller still runs, so a killed process never lingers as a zombie.
func Start(name string, argv []string, logPath string, env []string) (Process, error) {
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return Process{}, err
	}
	defer logFile.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return Process{}, fmt.Errorf("start %s: %w", name, err)
	}
	go func() { _ = cmd.Wait() }()
	start, err := startTime(cmd.Process.Pid)
	if err != nil {
		return Process{}, fmt.Errorf("start %s: %w", name, err)
	}
	return Process{Name: name, PID: cmd.Process.Pid, Start: start, Args: argv, Log: logPath}, nil
}

// Alive reports whether the recorded process still runs (and is not a zombie).
func (p Process) Alive() bool {
	stat, err := readStat(p.PID)
	if err != nil || stat.start != p.Start {
		return false
	}
	return stat.state != "Z" && stat.state != "X"
}

// Signal sends sig to the process if it is still the one we started.
func (p Process) Signal(sig syscall.Signal) error {
	if !p.Alive() {
		return fmt.Errorf("%s (pid %d) is not running", p.Name, p.PID)
	}
	return syscall.Kill(p.PID, sig)
}

// Stop sends SIGTERM, waits up to grace for the process to go, then sends SIGKILL and waits for it.
// Stopping a process that is already gone is not an error.
func (p Process) Stop(grace time.Duration) error {
	if !p.Alive() {
		return nil
	}
	// A stopped (SIGSTOP) process would sit on SIGTERM forever; wake it first.
	_ = syscall.Kill(p.PID, syscall.SIGCONT)
	_ = syscall.Kill(p.PID, syscall.SIGTERM)
	if p.wait(grace) {
		return nil
	}
	_ = syscall.Kill(p.PID, syscall.SIGKILL)
	if p.wait(5 * time.Second) {
		return nil
	}
	return fmt.Errorf("%s (pid %d) survived SIGKILL", p.Name, p.PID)
}

func (p Process) wait(d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if !p.Alive() {
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return !p.Alive()
}

// Tail returns the last n bytes of the process's log, for error messages.
func (p Process) Tail(n int) string {
	b, err := os.ReadFile(p.Log)
	if err != nil {
		return ""
	}
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

type stat struct {
	state string
	start uint64
}

func readStat(pid int) (stat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return stat{}, err
	}
	// The command name (field 2) is in parentheses and may hold spaces; fields after it are plain.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return stat{}, errors.New("malformed /proc stat")
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return stat{}, errors.New("short /proc stat")
	}
	start, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return stat{}, err
	}
	return stat{state: f[0], start: start}, nil
}

func startTime(pid int) (uint64, error) {
	s, err := readStat(pid)
	return s.start, err
}
