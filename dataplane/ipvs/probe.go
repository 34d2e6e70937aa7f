package ipvs

import (
	"fmt"

	"github.com/moby/ipvs"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// probeMark is the firewall mark of the throwaway virtual server the probe creates. A mark-based
// virtual server only sees packets carrying that mark, so the probe never captures real traffic.
const probeMark = 0x48524c44 // "HRLD"

// Probe reports whether the kernel really has IPVS, returning nil if so and an error saying why not
// otherwise.
//
// github.com/moby/ipvs cannot answer this: when the kernel lacks ip_vs its handle still "succeeds"
// (moby/ipvs issue 27). So Probe first looks up the generic netlink family "IPVS" (the lookup makes
// the kernel load ip_vs when it can, through the module's family alias), then adds a throwaway
// virtual server and reads it back, as kube-proxy's CanUseIPVSProxier does. It works in the
// calling process's network namespace.
//
// Call Probe before the first ipvs.New of the process: moby/ipvs resolves the family once per
// process, and a process that asked before ip_vs was loaded stays broken.
func Probe() error {
	if _, err := netlink.GenlFamilyGet("IPVS"); err != nil {
		return fmt.Errorf("the kernel has no IPVS generic netlink family (ip_vs module missing or not loadable): %w", err)
	}
	h, err := ipvs.New("")
	if err != nil {
		return fmt.Errorf("opening IPVS: %w", err)
	}
	defer h.Close()
	return probeHandle(h)
}

// probeHandle is the part of Probe that goes through the handle, separate so it is unit-testable.
func probeHandle(h Handle) error {
	svc := &ipvs.Service{FWMark: probeMark, AddressFamily: unix.AF_INET, SchedName: ipvs.RoundRobin}
	_ = h.DelService(svc) // left over from a probe that crashed halfway; absent is fine
	if err := h.NewService(svc); err != nil {
		return fmt.Errorf("creating a probe IPVS virtual server: %w", err)
	}
	defer func() { _ = h.DelService(svc) }() // one left behind is deleted by the next probe (above)
	svcs, err := h.GetServices()
	if err != nil {
		return fmt.Errorf("listing IPVS virtual servers: %w", err)
	}
	for _, s := range svcs {
		if s.FWMark == probeMark {
			return nil
		}
	}
	return fmt.Errorf("the kernel accepted a probe IPVS virtual server but does not list it: IPVS is not really there")
}
