package ipvs

import (
	"path/filepath"
	"testing"
)

type fakeSysctls map[string]string

func (f fakeSysctls) Get(name string) (string, error) { return f[name], nil }
func (f fakeSysctls) Set(name, value string) error    { f[name] = value; return nil }

func TestSysctlsRestoredByALaterProcess(t *testing.T) {
	s := fakeSysctls{
		"net/ipv4/vs/conntrack": "0", "net/ipv4/vs/expire_nodest_conn": "0",
		"net/ipv4/vs/expire_quiescent_template": "0", "net/ipv4/ip_forward": "1",
		"net/ipv4/conf/all/arp_ignore": "0", "net/ipv4/conf/all/arp_announce": "0",
	}
	state := filepath.Join(t.TempDir(), "sysctls.json")
	k := &sysctlKeeper{s: s, stateFile: state}
	if err := k.apply(true); err != nil {
		t.Fatal(err)
	}
	if s["net/ipv4/conf/all/arp_ignore"] != "1" || s["net/ipv4/conf/all/arp_announce"] != "2" || s["net/ipv4/vs/conntrack"] != "1" {
		t.Fatalf("after apply: %v", s)
	}
	// Applying twice must not record our own values as "previous".
	if err := k.apply(true); err != nil {
		t.Fatal(err)
	}
	later := &sysctlKeeper{s: s, stateFile: state}
	if err := later.restore(); err != nil {
		t.Fatal(err)
	}
	want := fakeSysctls{
		"net/ipv4/vs/conntrack": "0", "net/ipv4/vs/expire_nodest_conn": "0",
		"net/ipv4/vs/expire_quiescent_template": "0", "net/ipv4/ip_forward": "1",
		"net/ipv4/conf/all/arp_ignore": "0", "net/ipv4/conf/all/arp_announce": "0",
	}
	for k, v := range want {
		if s[k] != v {
			t.Errorf("%s = %s after restore, want %s", k, s[k], v)
		}
	}
}
