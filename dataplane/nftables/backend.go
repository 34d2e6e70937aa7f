// Package nftables is Herald's nftables data-plane backend: one table, `inet herald`, with
// O(1) verdict-map dispatch on `daddr . l4proto . dport` into one chain per Service port.
//
// It drives nftables with sigs.k8s.io/knftables rather than github.com/google/nftables, on
// purpose: knftables writes nft's own rule language, so rules read the same in code, in tests
// and in `nft list table inet herald`, and its Fake checks every transaction's references for
// unit tests. google/nftables would make every rule hand-built bytecode (payload offsets,
// registers, concatenation lengths), which is where proxies get subtle bugs. The cost is the
// `nft` binary (>= 1.0.1, with its libraries) on the node. A full sync goes to `nft -f` as one
// atomic transaction; incremental syncs go to one long-running `nft -i` (session.go), which
// keeps nft's cache of the table between syncs: a fresh `nft -f` spends ~70 ms reading 10,000
// chains before applying a change of five operations. The kernel side is kept small by design
// (no anonymous sets, see endpointRules; only deltas on incremental syncs; never listing the
// table).
package nftables

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"sort"
	"strings"

	"github.com/heraldlb/herald/dataplane"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/knftables"
)

// TableName is the one table Herald owns; --cleanup deletes it.
const TableName = "herald"

// Backend is the nftables dataplane.Backend.
type Backend struct {
	nft knftables.Interface
	// incremental commits incremental syncs: the nft session on a node, nft itself in tests.
	incremental transactionRunner
	// beginFull starts the transaction of a full sync: a stream to `nft -f` on a node, one
	// knftables transaction in tests.
	beginFull func(ctx context.Context) (bulkTx, error)
	// committed is what the last successful sync put in the kernel, per Service.
	committed map[types.NamespacedName]*fragment
	// refs counts the Services holding each shared element (two Services may share a hairpin
	// endpoint or a masquerade NodePort key); the element lives while any holds it.
	refs map[elementKey]int
	// lastTx is the number of operations of the last committed transaction (tests, metrics).
	lastTx int
	// tableExists reports whether Herald's table is in the kernel: `nft list tables` on a node
	// (it names the tables only; listing the table itself reads every chain), a List in tests.
	tableExists func(ctx context.Context) (bool, error)
	// readShape reads the kernel table's shape (drift.go): `nft -j list table` on a node, the
	// Fake's table in tests.
	readShape func(ctx context.Context) (tableShape, error)
	// generation reads the kernel's ruleset generation (drift.go); nil where there is none (the
	// Fake): then every drift check reads the shape.
	generation func() (uint32, error)
	// verifiedGen is a generation at which the kernel held what committed describes;
	// genVerified says whether it is known.
	verifiedGen uint32
	genVerified bool
	// synced is set by a full sync: from then on committed describes the kernel's table.
	synced bool
	// userspace are the userspace proxy's listeners (nil: none runs); see SetUserspaceListeners.
	userspace dataplane.UserspaceListeners
	// local tells pods' traffic from other traffic; see SetLocalTraffic.
	local dataplane.LocalTraffic
	// nodePorts says which node addresses NodePorts are open on; see SetNodePortAddresses.
	nodePorts dataplane.NodePortAddresses
}

// SetNodePortAddresses sets the node addresses NodePorts are open on (the zero value: all of
// them). Call it before the first sync.
func (b *Backend) SetNodePortAddresses(np dataplane.NodePortAddresses) { b.nodePorts = np }

// transactionRunner commits a transaction atomically (knftables.Interface and session).
type transactionRunner interface {
	Run(ctx context.Context, tx *knftables.Transaction) error
}

// New returns a backend using the nft binary in the caller's network namespace (the nft
// session for incremental syncs starts at the first one, in the namespace of that caller).
func New() (*Backend, error) {
	nft, err := knftables.New(knftables.InetFamily, TableName)
	if err != nil {
		return nil, err
	}
	path, err := exec.LookPath("nft")
	if err != nil {
		return nil, err
	}
	full := streamer{path: path, nft: nft}
	sess, err := newSession(full)
	if err != nil {
		return nil, err
	}
	b := NewWithInterface(nft)
	b.incremental, b.beginFull = sess, full.begin
	b.tableExists = func(ctx context.Context) (bool, error) {
		out, err := exec.CommandContext(ctx, path, "list", "tables", string(knftables.InetFamily)).Output()
		if err != nil {
			return false, fmt.Errorf("nft list tables: %w", err)
		}
		return slices.Contains(strings.Split(string(out), "\n"), "table inet "+TableName), nil
	}
	b.readShape = func(ctx context.Context) (tableShape, error) { return nftShape(ctx, path) }
	b.generation = rulesetGeneration
	return b, nil
}

// NewWithInterface returns a backend on a given knftables interface (a knftables.Fake in
// tests) that commits every sync through it. Only on a Fake can it read the table's shape
// (drift checks, full syncs that keep affinity sets); on another interface every full sync
// replaces the table.
func NewWithInterface(nft knftables.Interface) *Backend {
	b := &Backend{nft: nft, incremental: nft, committed: map[types.NamespacedName]*fragment{}, refs: map[elementKey]int{},
		beginFull: func(ctx context.Context) (bulkTx, error) { return newOneTx(ctx, nft), nil },
		tableExists: func(ctx context.Context) (bool, error) {
			_, err := nft.List(ctx, "chain")
			if knftables.IsNotFound(err) {
				return false, nil
			}
			return err == nil, err
		},
		readShape: func(context.Context) (tableShape, error) {
			return tableShape{}, errors.New("cannot read the table's shape through this knftables interface")
		}}
	if fake, ok := nft.(*knftables.Fake); ok {
		b.readShape = func(context.Context) (tableShape, error) { return fakeShape(fake), nil }
	}
	return b
}

// HasEarlierRules reports whether an earlier run's table is in the kernel: its rules forward
// (to the endpoints of when it stopped) until the first full sync replaces them.
func (b *Backend) HasEarlierRules(ctx context.Context) (bool, error) { return b.tableExists(ctx) }

// Close ends the nft session, if one runs; the rules stay.
func (b *Backend) Close() {
	if s, ok := b.incremental.(*session); ok {
		s.Close()
	}
}

func (b *Backend) Name() string { return "nftables" }

// LastTransactionSize is the number of operations the last successful sync sent.
func (b *Backend) LastTransactionSize() int { return b.lastTx }

// Sync implements dataplane.Backend. A full sync rewrites the whole table in one transaction,
// keeping the affinity sets (syncFull); an incremental one diffs each changed Service's
// fragment against what was committed.
func (b *Backend) Sync(ctx context.Context, req dataplane.SyncRequest) error {
	if req.Full {
		return b.syncFull(ctx, req.State)
	}
	tx := b.nft.NewTransaction()
	next := make(map[types.NamespacedName]*fragment, len(req.Changed))
	nextRefs := make(map[elementKey]int)
	// Work on copies of the refcounts that change, so a failed transaction leaves b intact.
	refs := overlayRefs{base: b.refs, delta: nextRefs}
	for _, svc := range sortedNames(req.Changed) {
		fr := render(req.State.Services[svc], b.userspace, b.local)
		diff(tx, b.committed[svc], fr, refs)
		next[svc] = fr
	}
	// The node's fragment is a handful of elements: diffing it every time is cheaper than
	// telling when its inputs changed.
	node := renderNode(req.State, b.nodePorts)
	diff(tx, b.committed[nodeFragment], node, refs)
	next[nodeFragment] = node
	if err := b.incremental.Run(ctx, tx); err != nil {
		return err
	}
	b.noteCommit()
	b.lastTx = tx.NumOperations()
	for svc, p := range next {
		if p == nil {
			delete(b.committed, svc)
		} else {
			b.committed[svc] = p
		}
	}
	for k, n := range nextRefs {
		if n == 0 {
			delete(b.refs, k)
		} else {
			b.refs[k] = n
		}
	}
	return nil
}

// syncFull makes the table hold st in one transaction, sent to nft one Service at a time. It
// replaces every rule, map and shared set, but keeps the affinity sets of the Services that
// still have them (their elements are the clients' recent choices: wiping them would move
// every sticky client) and touches no conntrack entry, so established connections carry on.
// For that it reads the shape of the kernel's table first; when that fails, or the kernel
// refuses the result (a base chain whose hook or priority changed between versions cannot be
// redefined in place), the table is deleted and re-created instead, as on a fresh node.
func (b *Backend) syncFull(ctx context.Context, st *dataplane.State) error {
	// A full sync leaves exactly st in the table, whatever was there; so when only its own
	// commit moves the generation from here (noteCommit), the kernel is known to hold st.
	b.genVerified = false
	if b.generation != nil {
		gen, err := b.generation()
		b.verifiedGen, b.genVerified = gen, err == nil
	}
	kernel, err := b.readShape(ctx)
	if err == nil {
		if err = b.replaceAll(ctx, st, kernel, false); err == nil {
			return nil
		}
	}
	if errWipe := b.replaceAll(ctx, st, tableShape{}, true); errWipe != nil {
		b.genVerified = false
		return errors.Join(err, errWipe)
	}
	return nil
}

// replaceAll is one full sync: with wipe, the table is deleted and re-created; otherwise every
// chain and shared set or map of the kernel's table (kernel) is flushed and refilled, the
// affinity sets are re-added in place (which keeps their elements), and what st no longer
// needs is deleted at the end, once nothing refers to it.
func (b *Backend) replaceAll(ctx context.Context, st *dataplane.State, kernel tableShape, wipe bool) error {
	out, err := b.beginFull(ctx)
	if err != nil {
		return err
	}
	next := make(map[types.NamespacedName]*fragment, len(st.Services))
	nextRefs := map[elementKey]int{}
	tx := out.Part()
	// "add" first so that "delete" or "flush" cannot fail on a node where the table never existed.
	tx.Add(&knftables.Table{})
	if wipe {
		tx.Delete(&knftables.Table{})
	} else {
		for _, c := range sortedKeys(kernel.chains) {
			tx.Flush(&knftables.Chain{Name: c})
		}
		for _, s := range sortedKeys(kernel.sets) {
			if _, shared := baseShape.sets[s]; shared {
				if kernel.maps[s] {
					tx.Flush(&knftables.Map{Name: s})
				} else {
					tx.Flush(&knftables.Set{Name: s})
				}
			}
		}
	}
	addBaseRuleset(tx)
	node := renderNode(st, b.nodePorts)
	diff(tx, nil, node, plainRefs(nextRefs))
	next[nodeFragment] = node
	err = out.EndPart()
	for svc, ports := range st.Services {
		if err != nil {
			break
		}
		fr := render(ports, b.userspace, b.local)
		diff(out.Part(), nil, fr, plainRefs(nextRefs))
		if fr != nil {
			next[svc] = fr
		}
		err = out.EndPart()
	}
	if err == nil && !wipe {
		deleteUnwanted(out.Part(), kernel, next)
		err = out.EndPart()
	}
	if err != nil {
		out.Abort()
		return err
	}
	if err := out.Commit(); err != nil {
		return err
	}
	b.lastTx = out.Operations()
	b.committed, b.refs, b.synced = next, nextRefs, true
	b.noteCommit()
	return nil
}

// deleteUnwanted deletes the kernel's chains and sets that neither the base ruleset nor a
// Service of next has (all chains were flushed before, so nothing refers to them any more).
func deleteUnwanted(tx *knftables.Transaction, kernel tableShape, next map[types.NamespacedName]*fragment) {
	wanted := map[string]bool{}
	for _, fr := range next {
		for _, c := range fr.chains {
			wanted[c.name] = true
		}
		for _, s := range fr.sets {
			wanted[s.name] = true
		}
	}
	for _, c := range sortedKeys(kernel.chains) {
		if _, base := baseShape.chains[c]; !base && !wanted[c] {
			tx.Delete(&knftables.Chain{Name: c})
		}
	}
	for _, s := range sortedKeys(kernel.sets) {
		if _, base := baseShape.sets[s]; base || wanted[s] {
			continue
		}
		if kernel.maps[s] {
			tx.Delete(&knftables.Map{Name: s})
		} else {
			tx.Delete(&knftables.Set{Name: s})
		}
	}
}

// noteCommit records, after a commit of the backend's own, whether the kernel still holds
// exactly what the backend believes: it does when the ruleset generation moved by one from a
// verified value (this commit alone). Otherwise the next drift check reads the table.
func (b *Backend) noteCommit() {
	if b.generation == nil {
		return
	}
	gen, err := b.generation()
	b.genVerified = err == nil && b.genVerified && gen == b.verifiedGen+1
	b.verifiedGen = gen
}

// noteNoopCommit is noteCommit for a commit that changed nothing (WarmUp's). The kernel of
// this project's machines does not count it as a generation; noteCommit, which expects one,
// then doubted the table, and the next drift check listed it: 2.5 s of nft CPU at 10,000
// Services, in the way of the first change after every full sync. A generation that did not
// move keeps what is known; one that moved may be someone else's commit, and is doubted.
func (b *Backend) noteNoopCommit() {
	if b.generation == nil {
		return
	}
	if gen, err := b.generation(); err != nil || gen != b.verifiedGen {
		b.genVerified = false
	}
}

// CheckDrift implements dataplane.DriftChecker: it returns what differs between the kernel's
// table and what the backend committed ("" when nothing does). It costs one netlink request
// unless someone else committed to nftables since the last check (drift.go). It must run in
// the network namespace the rules belong to, like Sync.
func (b *Backend) CheckDrift(ctx context.Context) (string, error) {
	if !b.synced {
		return "", nil // nothing committed yet: the first full sync comes anyway
	}
	var gen uint32
	genErr := errors.New("no ruleset generation")
	if b.generation != nil {
		gen, genErr = b.generation()
		if genErr == nil && b.genVerified && gen == b.verifiedGen {
			return "", nil
		}
	}
	got, err := b.readShape(ctx)
	if err != nil {
		return "", err
	}
	if diffs := b.expectedShape().differences(got); len(diffs) > 0 {
		b.genVerified = false
		return describeDrift(diffs), nil
	}
	// gen was read before the table: a commit after it moves the generation again.
	b.verifiedGen, b.genVerified = gen, genErr == nil
	return "", nil
}

// WarmUp starts the nft session, if it does not run, with a transaction that changes
// nothing: it re-adds one committed element. The first element command of a new nft process
// costs ~70 ms with 10,000 Services (later ones ~10), and that should not be paid by the first
// change after a (re)start. The proxy calls it after a full sync; like Sync, it must run in the
// network namespace the rules belong to.
func (b *Backend) WarmUp(ctx context.Context) {
	s, ok := b.incremental.(*session)
	if !ok || s.running() {
		return
	}
	for _, fr := range b.committed {
		if e, ok := fr.anyElement(); ok {
			tx := b.nft.NewTransaction()
			tx.Add(element(e.elementKey, e.value))
			if s.Run(ctx, tx) == nil {
				b.noteNoopCommit()
			} // a failure costs only the warm-up; the next sync has its own
			return
		}
	}
}

// Cleanup deletes the table and everything in it.
func (b *Backend) Cleanup(ctx context.Context) error {
	tx := b.nft.NewTransaction()
	tx.Add(&knftables.Table{})
	tx.Delete(&knftables.Table{})
	if err := b.nft.Run(ctx, tx); err != nil {
		return err
	}
	b.committed, b.refs, b.synced = map[types.NamespacedName]*fragment{}, map[elementKey]int{}, false
	return nil
}

// refCounter is the refcount store diff updates: a plain map on full syncs, an overlay on
// incremental ones.
type refCounter interface {
	get(elementKey) int
	set(elementKey, int)
}

type plainRefs map[elementKey]int

func (r plainRefs) get(k elementKey) int    { return r[k] }
func (r plainRefs) set(k elementKey, n int) { r[k] = n }

type overlayRefs struct{ base, delta map[elementKey]int }

func (r overlayRefs) get(k elementKey) int {
	if n, ok := r.delta[k]; ok {
		return n
	}
	return r.base[k]
}
func (r overlayRefs) set(k elementKey, n int) { r.delta[k] = n }

// diff appends to tx the operations that turn old into cur (either may be nil: empty). The
// order matters within the one transaction: elements pointing at chains go before the chains,
// rules using a set before the set; additions go the other way round. Fragments are sorted, so
// the operations come in a stable order.
func diff(tx *knftables.Transaction, old, cur *fragment, rc refCounter) {
	if old == nil {
		old = &fragment{}
	}
	if cur == nil {
		cur = &fragment{}
	}
	// 1. Elements that go away or change value.
	for _, e := range old.elements {
		if nv, ok := cur.element(e.elementKey); ok && nv == e.value {
			continue
		}
		n := rc.get(e.elementKey) - 1
		rc.set(e.elementKey, n)
		if n <= 0 {
			tx.Delete(element(e.elementKey, e.value))
		}
	}
	// 2. Chains that go away or whose rules change: flush them all, then delete the ones that go
	// away (a chain's rules may jump to another of the Service's chains).
	for _, c := range old.chains {
		if rules, keep := cur.chain(c.name); !keep || !slices.Equal(rules, c.rules) {
			tx.Flush(&knftables.Chain{Name: c.name})
		}
	}
	for _, c := range old.chains {
		if _, keep := cur.chain(c.name); !keep {
			tx.Delete(&knftables.Chain{Name: c.name})
		}
	}
	// 3. Sets that go away (their rules were flushed above).
	for _, s := range old.sets {
		if spec, ok := cur.set(s.name); !ok || spec != s.spec {
			tx.Delete(&knftables.Set{Name: s.name})
		}
	}
	// 4. New or changed sets, chains and rules.
	for _, s := range cur.sets {
		if spec, ok := old.set(s.name); !ok || spec != s.spec {
			tx.Add(&knftables.Set{Name: s.name, Type: s.spec.keyType, Flags: []knftables.SetFlag{knftables.DynamicFlag, knftables.TimeoutFlag}, Timeout: &s.spec.timeout})
		}
	}
	// Every new chain exists before any rule is added, since rules may jump between them.
	for _, c := range cur.chains {
		if _, had := old.chain(c.name); !had {
			tx.Add(&knftables.Chain{Name: c.name})
		}
	}
	for _, c := range cur.chains {
		if oldRules, had := old.chain(c.name); had && slices.Equal(oldRules, c.rules) {
			continue
		}
		for _, r := range c.rules {
			tx.Add(&knftables.Rule{Chain: c.name, Rule: r})
		}
	}
	// 5. New or changed elements.
	for _, e := range cur.elements {
		if ov, ok := old.element(e.elementKey); ok && ov == e.value {
			continue
		}
		n := rc.get(e.elementKey) + 1
		rc.set(e.elementKey, n)
		if n == 1 {
			tx.Add(element(e.elementKey, e.value))
		}
	}
}

func element(k elementKey, value string) *knftables.Element {
	e := &knftables.Element{Key: strings.Split(k.key, " . ")}
	if isMap(k.container) {
		e.Map = k.container
		e.Value = []string{value}
	} else {
		e.Set = k.container
	}
	return e
}

func sortedNames(m map[types.NamespacedName]struct{}) []types.NamespacedName {
	out := make([]types.NamespacedName, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out
}

var (
	_ dataplane.Backend      = (*Backend)(nil)
	_ dataplane.DriftChecker = (*Backend)(nil)
)
