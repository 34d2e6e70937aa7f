package nftables

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os/exec"
	"strings"

	"sigs.k8s.io/knftables"
)

// bulkTx is one transaction built and handed over in parts, so that a full sync of 10,000
// Services never holds all its operations, nor all their text, at once. The parts are
// committed together, atomically, by Commit.
type bulkTx interface {
	// Part is the transaction the next part is added to.
	Part() *knftables.Transaction
	// EndPart is called when a part is complete (a stream sends it to nft now).
	EndPart() error
	// Operations is the number of operations in the parts so far.
	Operations() int
	// Commit commits every part as one transaction; Abort drops them. Call one of them once.
	Commit() error
	Abort()
}

// oneTx is a bulkTx that is one knftables transaction, run by Commit: for the knftables Fake
// in unit tests, which checks a transaction as a whole.
type oneTx struct {
	ctx context.Context
	nft knftables.Interface
	tx  *knftables.Transaction
}

func newOneTx(ctx context.Context, nft knftables.Interface) bulkTx {
	return &oneTx{ctx: ctx, nft: nft, tx: nft.NewTransaction()}
}

func (o *oneTx) Part() *knftables.Transaction { return o.tx }
func (o *oneTx) EndPart() error               { return nil }
func (o *oneTx) Operations() int              { return o.tx.NumOperations() }
func (o *oneTx) Commit() error                { return o.nft.Run(o.ctx, o.tx) }
func (o *oneTx) Abort()                       {}

// streamer runs `nft -f -` and writes a transaction's parts to it as they are built; nft reads
// its whole input and commits it as one transaction when the input ends. Why not knftables'
// Run: it writes the whole transaction's text into one buffer first, and keeps that buffer, at
// the size of the largest transaction it ever ran (~8 MB for a full sync of 10,000 Services),
// for the life of the process.
type streamer struct {
	path string
	nft  knftables.Interface // makes the parts' transactions (they carry the family and table)
}

// stream is one transaction on its way to nft.
type stream struct {
	nft        knftables.Interface
	cmd        *exec.Cmd
	stdin      io.WriteCloser
	in         *bufio.Writer
	out        bytes.Buffer // nft's stdout and stderr: its error messages
	part       *knftables.Transaction
	operations int
	// err is the first failure to write (nft gone); Commit reports it with nft's own answer.
	err error
}

// begin starts nft, in the network namespace of the calling thread (as knftables does).
func (s streamer) begin(ctx context.Context) (bulkTx, error) {
	st := &stream{nft: s.nft, cmd: exec.CommandContext(ctx, s.path, "-f", "-")}
	st.cmd.Stdout, st.cmd.Stderr = &st.out, &st.out
	stdin, err := st.cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	if err := st.cmd.Start(); err != nil {
		return nil, fmt.Errorf("nft -f: %w", err)
	}
	st.stdin, st.in = stdin, bufio.NewWriterSize(stdin, 64<<10)
	return st, nil
}

// Run commits one transaction through a stream of one part (transactionRunner).
func (s streamer) Run(ctx context.Context, tx *knftables.Transaction) error {
	st, err := s.begin(ctx)
	if err != nil {
		return err
	}
	st.(*stream).part = tx
	if err := st.EndPart(); err != nil {
		st.Abort()
		return err
	}
	return st.Commit()
}

func (st *stream) Part() *knftables.Transaction {
	if st.part == nil {
		st.part = st.nft.NewTransaction()
	}
	return st.part
}

func (st *stream) EndPart() error {
	if st.part == nil {
		return nil
	}
	text := st.part.String()
	// knftables reports an invalid object as a trailing comment (its own Run returns that
	// error without running anything); nft would take it for a comment and commit the rest.
	if i := strings.LastIndex(text, "# ERROR: "); i >= 0 {
		return fmt.Errorf("invalid nftables object: %s", text[i+len("# ERROR: "):])
	}
	st.operations += st.part.NumOperations()
	st.part = nil
	if st.err == nil {
		_, st.err = st.in.WriteString(text)
	}
	return nil
}

func (st *stream) Operations() int { return st.operations }

func (st *stream) Commit() error {
	if st.err == nil {
		st.err = st.in.Flush()
	}
	st.stdin.Close()
	if err := st.cmd.Wait(); err != nil {
		return fmt.Errorf("nft -f: %w: %s", err, strings.TrimSpace(st.out.String()))
	}
	if st.err != nil {
		return fmt.Errorf("writing to nft -f: %w", st.err)
	}
	return nil
}

// Abort kills nft before its input ends: nothing is committed.
func (st *stream) Abort() {
	_ = st.cmd.Process.Kill() // fails only if it already exited; Wait reaps it either way
	st.stdin.Close()
	_ = st.cmd.Wait()
}
