package ipvs

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Sysctls reads and writes kernel parameters by their /proc/sys path ("net/ipv4/ip_forward").
type Sysctls interface {
	Get(name string) (string, error)
	Set(name, value string) error
}

// ProcSysctls is Sysctls on /proc/sys.
type ProcSysctls struct{}

func (ProcSysctls) Get(name string) (string, error) {
	b, err := os.ReadFile(filepath.Join("/proc/sys", name))
	return strings.TrimSpace(string(b)), err
}

func (ProcSysctls) Set(name, value string) error {
	return os.WriteFile(filepath.Join("/proc/sys", name), []byte(value), 0o644)
}

// ipvsSysctls are what IPVS in NAT mode behind Services needs.
var ipvsSysctls = []struct{ name, value, why string }{
	{"net/ipv4/vs/conntrack", "1", "conntrack entries for IPVS connections, needed to masquerade them with nftables"},
	{"net/ipv4/vs/expire_nodest_conn", "1", "drop connections to deleted real servers at once instead of blackholing them"},
	{"net/ipv4/vs/expire_quiescent_template", "1", "persistence templates of weight-0 real servers expire, so affinity moves off terminating endpoints"},
	{"net/ipv4/ip_forward", "1", "forward to real servers on other hosts"},
}

// strictARPSysctls stop the node from answering ARP for Service IPs on the dummy link (arp_ignore=1:
// answer only for addresses on the receiving interface) and from using them as ARP source
// (arp_announce=2), so only the announcing node (L2 mode) attracts a VIP.
var strictARPSysctls = []struct{ name, value, why string }{
	{"net/ipv4/conf/all/arp_ignore", "1", "strict ARP: answer only for addresses on the receiving link"},
	{"net/ipv4/conf/all/arp_announce", "2", "strict ARP: never announce Service IPs as ARP source"},
}

// sysctlKeeper sets the backend's sysctls and records their previous values in a state file, so
// cleanup (even from a later process, e.g. speaker --cleanup) restores exactly what it changed.
type sysctlKeeper struct {
	s         Sysctls
	stateFile string
}

func newSysctlKeeper(opts Options) *sysctlKeeper {
	k := &sysctlKeeper{s: opts.Sysctls, stateFile: opts.SysctlStateFile}
	if k.s == nil {
		k.s = ProcSysctls{}
	}
	if k.stateFile == "" {
		k.stateFile = DefaultSysctlStateFile
	}
	return k
}

// ApplySysctls sets the sysctls a Backend with these options needs (opts.Sysctls,
// SysctlStateFile and StrictARP count), recording the values it replaces for Cleanup, as the
// Backend's first Sync does. Why: /proc/sys is read-only in an unprivileged container, so the
// chart runs this in a privileged init step (speaker --prepare-sysctls); the speaker's Backend then
// finds every value already set, writes nothing, and needs no privilege.
func ApplySysctls(opts Options) error {
	return newSysctlKeeper(opts).apply(opts.StrictARP)
}

// wanted lists the sysctls the backend needs.
func wanted(strictARP bool) []struct{ name, value, why string } {
	if !strictARP {
		return ipvsSysctls
	}
	return append(append(ipvsSysctls[:0:0], ipvsSysctls...), strictARPSysctls...)
}

// drifted lists the sysctls that no longer hold the value the backend needs (someone reset
// them), as "name=value, want wanted".
func (k *sysctlKeeper) drifted(strictARP bool) ([]string, error) {
	var out []string
	for _, w := range wanted(strictARP) {
		cur, err := k.s.Get(w.name)
		if err != nil {
			return nil, fmt.Errorf("reading sysctl %s: %w", w.name, err)
		}
		if cur != w.value {
			out = append(out, fmt.Sprintf("sysctl %s=%s, want %s", w.name, cur, w.value))
		}
	}
	return out, nil
}

func (k *sysctlKeeper) apply(strictARP bool) error { return k.applyList(wanted(strictARP)) }

// ApplyStrictARP sets only the strict-ARP sysctls, recording the values it replaces in stateFile
// (default DefaultSysctlStateFile) as the Backend does, so RestoreSysctls (or an IPVS Backend's
// Cleanup) puts them back: the userspace proxy's --dataplane=userspace holds Service IPs as local
// routes on a dummy link too, and every node must not answer ARP for them. s nil: /proc/sys.
func ApplyStrictARP(s Sysctls, stateFile string) error {
	return newSysctlKeeper(Options{Sysctls: s, SysctlStateFile: stateFile}).applyList(strictARPSysctls)
}

// RestoreSysctls puts back every sysctl value recorded in stateFile (default
// DefaultSysctlStateFile) and forgets them. s nil: /proc/sys.
func RestoreSysctls(s Sysctls, stateFile string) error {
	return newSysctlKeeper(Options{Sysctls: s, SysctlStateFile: stateFile}).restore()
}

func (k *sysctlKeeper) applyList(want []struct{ name, value, why string }) error {
	saved, err := k.load()
	if err != nil {
		return err
	}
	var errs []error
	for _, w := range want {
		cur, err := k.s.Get(w.name)
		if err != nil {
			errs = append(errs, fmt.Errorf("reading sysctl %s (%s): %w", w.name, w.why, err))
			continue
		}
		if cur == w.value {
			continue
		}
		if _, ok := saved[w.name]; !ok {
			saved[w.name] = cur
			if err := k.save(saved); err != nil {
				return err
			}
		}
		if err := k.s.Set(w.name, w.value); err != nil {
			errs = append(errs, fmt.Errorf("setting sysctl %s=%s (%s): %w", w.name, w.value, w.why, err))
		}
	}
	return errors.Join(errs...)
}

// restore puts back every value apply changed and forgets them.
func (k *sysctlKeeper) restore() error {
	saved, err := k.load()
	if err != nil {
		return err
	}
	var errs []error
	for name, value := range saved {
		if err := k.s.Set(name, value); err != nil {
			errs = append(errs, fmt.Errorf("restoring sysctl %s=%s: %w", name, value, err))
		}
	}
	if len(errs) == 0 {
		if err := os.Remove(k.stateFile); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (k *sysctlKeeper) load() (map[string]string, error) {
	saved := map[string]string{}
	b, err := os.ReadFile(k.stateFile)
	if errors.Is(err, os.ErrNotExist) {
		return saved, nil
	}
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, &saved); err != nil {
		return nil, fmt.Errorf("%s: %w", k.stateFile, err)
	}
	return saved, nil
}

func (k *sysctlKeeper) save(saved map[string]string) error {
	b, err := json.Marshal(saved)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(k.stateFile), 0o755); err != nil {
		return err
	}
	tmp := k.stateFile + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, k.stateFile)
}
