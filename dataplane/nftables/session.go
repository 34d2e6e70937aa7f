package nftables

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"sigs.k8s.io/knftables"
)

// session sends transactions to one long-running `nft -i` process instead of a fresh `nft -f`
// per transaction.
//
// Why: before it applies anything, nft loads into memory the kernel's view of every object
// its commands may touch; for `inet herald` with 10,000 Services that is 10,000+ chains, about
// 70 ms of nft CPU, whatever the size of the change. An interactive nft keeps that cache
// between commands and refetches it only when the ruleset generation changed under it
// (someone else committed), so a change of a few operations costs a few milliseconds and
// stays correct. Why not netlink (github.com/google/nftables): every rule would be described
// twice, once in nft's language for knftables (full syncs, the Fake the unit tests check)
// and once as hand-built expressions, and the two could drift; here the knftables
// Transaction stays the one description of a change, and the text sent to the session is
// exactly what `nft -f` would get.
//
// Protocol: one input line is one nft run, and nft commits all commands of a run as one
// transaction, so a transaction goes as one line, its commands joined by "; ". After it
// comes a marker line that is a syntax error by construction; nft answers every line only
// with errors (stdout and stderr share one pipe, so the order holds), so everything before
// the marker's own error belongs to the transaction: nothing means committed, a line starting
// with "Error:" means rejected (nothing applied: a transaction is atomic). Anything else
// (unexpected output, no answer within the timeout, the process gone) is doubt: the process
// is killed and an error returned, and the proxy's next sync is a full one, which replaces
// the table wholesale whatever the state.
//
// The process is started on first use, in the network namespace of the calling thread (as
// knftables does for each `nft -f`). Where `nft -i` does not work (nft built without its
// command-line interface), every transaction goes to the fallback (`nft -f`, stream.go).
type session struct {
	path     string
	fallback transactionRunner
	timeout  time.Duration

	mu       sync.Mutex
	proc     *exec.Cmd
	stdin    io.WriteCloser
	out      *os.File // read end of the pipe holding nft's stdout and stderr
	lines    *bufio.Reader
	seq      uint64
	history  int  // bytes of transactions sent to the running process (its line history)
	disabled bool // `nft -i` does not work here: use the fallback
}

const (
	// sessionTimeout bounds one transaction (and the start of the process). Large
	// transactions take longer: they go to the fallback, see sessionMaxBytes.
	sessionTimeout = 10 * time.Second
	// sessionMaxBytes: a transaction larger than this (a full sync, a burst of thousands of
	// changes) goes to `nft -f`, where the one-off cache load is small next to the work.
	sessionMaxBytes = 256 << 10
	// sessionMaxHistory restarts the process once it has been sent that many bytes of
	// transactions: nft's line editor keeps every line in its in-memory history, and each new
	// line costs more as that history grows, steeply past 2 MB (nft 1.0.6 with libedit: a
	// transaction of 60 commands took 3 ms on average over the first 1.2 MB, 6 ms over 2.4 MB
	// and 11 ms over 3.6 MB; the former limit, 5,000 transactions, let transactions of 500
	// bytes reach 2.5 MB). A restart costs one cache load.
	sessionMaxHistory = 1 << 20
	// markerPrefix starts the line sent after each transaction; "herald-end-<n>" is not an
	// nft command, so nft answers it with a syntax error that echoes the line.
	markerPrefix = "herald-end-"
)

func newSession(fallback transactionRunner) (*session, error) {
	path, err := exec.LookPath("nft")
	if err != nil {
		return nil, err
	}
	return &session{path: path, fallback: fallback, timeout: sessionTimeout}, nil
}

// Run commits tx through the running nft process (started if needed), or through the
// fallback when tx is large or `nft -i` does not work on this node.
func (s *session) Run(ctx context.Context, tx *knftables.Transaction) error {
	script := tx.String()
	if strings.Contains(script, "# ERROR: ") || len(script) > sessionMaxBytes {
		// knftables reports an invalid object as a trailing comment; its own Run returns
		// that error without running anything.
		return s.fallback.Run(ctx, tx)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.disabled {
		return s.fallback.Run(ctx, tx)
	}
	if s.proc == nil {
		if err := s.start(ctx); err != nil {
			s.disabled = true
			return s.fallback.Run(ctx, tx)
		}
	}
	line := strings.ReplaceAll(strings.TrimSuffix(script, "\n"), "\n", "; ")
	answer, err := s.exchange(ctx, line)
	if err != nil {
		s.stop()
		return fmt.Errorf("nft session (restarted; the next sync is a full one): %w", err)
	}
	if s.history += len(line); s.history >= sessionMaxHistory {
		s.stop()
	}
	if answer == "" {
		return nil
	}
	if strings.HasPrefix(answer, "Error:") {
		return fmt.Errorf("nft: %s", describeError(answer))
	}
	s.stop()
	return fmt.Errorf("nft session gave an unexpected answer (restarted): %s", answer)
}

// running says whether an nft process runs.
func (s *session) running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.proc != nil
}

// Close ends the nft process, if one runs.
func (s *session) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stop()
}

// start runs `nft -i` and checks that it answers a marker.
func (s *session) start(ctx context.Context) error {
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	cmd := exec.Command(s.path, "-i")
	// nft writes its line history to $HOME/.nft.history on exit: not on a node.
	cmd.Env = append(os.Environ(), "HOME=/nonexistent")
	cmd.Stdout, cmd.Stderr = w, w
	stdin, err := cmd.StdinPipe()
	if err != nil {
		r.Close()
		w.Close()
		return err
	}
	err = cmd.Start()
	w.Close() // the child holds its own copy
	if err != nil {
		r.Close()
		return err
	}
	s.proc, s.stdin, s.out, s.lines, s.history = cmd, stdin, r, bufio.NewReaderSize(r, 64<<10), 0
	// Without ctx's deadline: a failure here disables the session for good, which the caller's
	// deadline must not decide; exchange has a time limit of its own.
	answer, err := s.exchange(context.WithoutCancel(ctx), "")
	if err != nil {
		s.stop()
		return fmt.Errorf("nft -i does not answer as expected: %w %q", err, answer)
	}
	if answer != "" {
		s.stop()
		return fmt.Errorf("nft -i does not answer as expected: %q", answer)
	}
	return nil
}

// exchange sends one line (none if empty) and the marker, and returns what nft answered to
// the line: its output up to the marker's own error, trimmed.
func (s *session) exchange(ctx context.Context, line string) (string, error) {
	s.seq++
	marker := markerPrefix + strconv.FormatUint(s.seq, 10)
	var msg strings.Builder
	if line != "" {
		msg.WriteString(line)
		msg.WriteByte('\n')
	}
	msg.WriteString(marker)
	msg.WriteByte('\n')
	deadline := time.Now().Add(s.timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	if err := s.out.SetReadDeadline(deadline); err != nil {
		return "", err
	}
	// The pipe to nft holds 64 KiB; a longer line is written while nft reads it, and nft
	// never writes much before it has read the whole line, so this cannot deadlock.
	if _, err := io.WriteString(s.stdin, msg.String()); err != nil {
		return "", fmt.Errorf("writing to nft: %w", err)
	}
	var got []string
	for {
		l, err := s.lines.ReadString('\n')
		if err != nil {
			return "", fmt.Errorf("reading from nft: %w", err)
		}
		l = strings.TrimRight(l, "\n")
		if l != marker {
			got = append(got, l)
			continue
		}
		// The marker's error is the line before it ("Error: syntax error, ...") and a
		// caret line after it.
		if len(got) == 0 || !strings.HasPrefix(got[len(got)-1], "Error: syntax error") {
			return "", fmt.Errorf("unexpected answer to the end marker: %q", strings.Join(got, "\n"))
		}
		if _, err := s.lines.ReadString('\n'); err != nil {
			return "", fmt.Errorf("reading from nft: %w", err)
		}
		return strings.TrimSpace(strings.Join(got[:len(got)-1], "\n")), nil
	}
}

// stop kills the process (it holds no state worth a graceful exit) and reaps it.
func (s *session) stop() {
	if s.proc == nil {
		return
	}
	s.stdin.Close()
	_ = s.proc.Process.Kill() // fails only if it already exited; Wait reaps it either way
	_ = s.proc.Wait()         // killed: its exit status says nothing
	s.out.Close()
	s.proc, s.stdin, s.out, s.lines = nil, nil, nil, nil
}

// describeError shortens nft's answer to a rejected transaction: nft echoes the whole input
// line (every command of the transaction) under its message and marks the culprit with
// carets; keep the message and the one command the carets point into.
func describeError(answer string) string {
	lines := strings.Split(answer, "\n")
	if len(lines) < 3 {
		return answer
	}
	msg, input, carets := lines[0], lines[1], lines[2]
	at := strings.IndexAny(carets, "^~")
	if at < 0 || at >= len(input) {
		return msg
	}
	start := strings.LastIndex(input[:at], "; ") + 1
	end := strings.Index(input[at:], "; ")
	if end < 0 {
		end = len(input)
	} else {
		end += at
	}
	return msg + ": " + strings.TrimSpace(input[start:end])
}
