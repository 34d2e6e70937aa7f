// Package membership tells each speaker which of its peers are alive, within a few hundred
// milliseconds and without the Kubernetes API server, and carries a small piece of state from each
// speaker to the others (the L2 announcer uses it for the IPs a node owns).
//
// Mechanism: every speaker sends an authenticated UDP heartbeat to every peer (port 9652) every
// Interval (50 ms by default) and declares a peer dead when no valid heartbeat arrived for
// DeadAfter (250 ms by default). A peer that has just restarted (heard in a new epoch) gets four
// times DeadAfter for its first RestartGrace (10 s): a starting speaker's first heartbeats come
// late on a busy node, and declaring it dead then would move the IPs it has just taken back.
//
// Why not hashicorp/memberlist: its SWIM failure detector confirms a death only after an indirect
// probe round and a suspicion timeout that grows with the cluster (log(n) × ProbeInterval ×
// SuspicionMult); pushing it under 300 ms means probe intervals of a few tens of milliseconds, where
// its TCP push-pull and its indirect probes become the dominant cost and tuning it is fighting its
// design. Its "encryption" (AES-GCM with a keyring) authenticates messages but does not stop a
// captured message from being replayed, which is exactly how a stranger could keep a dead owner
// "alive". A direct all-to-all heartbeat is O(n²) packets, which is fine for the node counts an L2
// segment holds (100 nodes × 20 Hz = 2,000 small packets/s per node), gives a detection time that is
// simply DeadAfter, and lets us choose the replay protection.
//
// Starvation: a live node must not be declared dead because its CPUs are busy. The sending,
// receiving and expiry all run on one OS thread in the real-time class (SCHED_FIFO, see
// makeThreadRealtime), blocked in ppoll on a socket kept out of Go's network poller, so the kernel
// wakes that thread itself and runs it ahead of every normal task, whatever the node's load,
// cgroup weights or CPU quota. What is left (a frozen process, a paused VM, no CAP_SYS_NICE) is
// handled on the receiving side: a node that finds it was not running for a while does not count
// that time against its peers (see detectStallLocked), and after a real stall it defers to them.
// A nice value alone (RaisePriority, still applied to the rest of the process) is not enough: it
// orders threads only within their scheduling group (a session under autogroup, a pod's cgroup).
//
// Security: each message carries the sender's name, its boot epoch (nanoseconds at process start),
// a sequence number and a send timestamp, and ends with HMAC-SHA256 over all of it keyed by a key
// derived from the shared secret (--secret-file). A receiver accepts a message only if the MAC is
// valid, (epoch, seq) is strictly greater than the last one accepted from that sender (replays of
// anything already seen are dropped), and the timestamp is within MaxClockSkew of its own clock (so
// a receiver that restarted and lost its counters cannot be fed an old capture either).
//
// State: the payload (the L2 announcer's claims) travels only while a peer does not hold its
// current version. Each heartbeat names the version of the sender's payload and the version of the
// receiver's payload the sender holds; a sender includes its payload for a peer whose last
// heartbeat acknowledged an older version. A change reaches every peer with the next heartbeat
// (sent at once), a lost one is repaired by the next ack, and at steady state a heartbeat is about
// a hundred bytes whatever the payload (wire version 2; version 1 peers, from earlier releases,
// get the whole payload in every heartbeat, see message.go). A payload larger than a datagram
// (MaxPayload) travels in chunks, each an authenticated heartbeat of its own, a few per heartbeat
// round until the peer acknowledges the version; only to peers whose heartbeats say they take
// chunks (View.PayloadLimit tells the application how much state every alive peer can receive).
//
// Split brain: a speaker that sees at most half of the members alive (itself included) has no
// quorum and must not announce anything (see View.Quorum): the majority side will have moved its
// IPs after the same DeadAfter. With one or two members there is no majority to consult and quorum
// is always granted (a two-node cluster cannot tell a dead peer from a cut link).
package membership
