package main

import (
	"bufio"
	"context"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// vmEnv is a cached kernel plus base initramfs.
type vmEnv struct {
	version     string // kernel ABI, e.g. 6.1.0-56-cloud-amd64
	vmlinuz     string
	baseArchive string // uncompressed newc cpio: busybox, modules, the tools of imageTools, /init
}

// hostTools are what the runner needs on the host, with the Debian package that provides each.
var hostTools = []struct{ bin, pkg string }{
	{"qemu-system-x86_64", "qemu-system-x86"},
	{"busybox", "busybox-static"},
	{"depmod", "kmod"},
	{"cpio", "cpio"},
	{"nft", "nftables"},
	{"ipvsadm", "ipvsadm"},
	{"ip", "iproute2"},
	{"xtables-nft-multi", "iptables"},
	{"ipset", "ipset"},
}

// imageTools are the host binaries copied into the image with their libraries: nft for Herald's
// backends (knftables runs it), ipvsadm for the tests, iproute2's ip for the tests' `ip netns`
// (busybox's ip has none), and iptables (its nft flavour) and ipset for kube-proxy's IPVS mode,
// which the differential test runs there (e2e/parity).
var imageTools = []string{"nft", "ipvsadm", "ip", "ipset", "xtables-nft-multi"}

// iptablesNames are the names kube-proxy calls iptables by; each is xtables-nft-multi, which
// acts by the name it is called under.
var iptablesNames = []string{"iptables", "iptables-save", "iptables-restore", "ip6tables", "ip6tables-save", "ip6tables-restore"}

// etcFiles are copied from the host: ipset parses "tcp" and "udp" in kube-proxy's entries with
// getprotobyname, which reads /etc/protocols.
var etcFiles = []string{"/etc/protocols", "/etc/services"}

// xtablesDir holds iptables' match and target extensions, which it loads with dlopen (ldd does
// not list them).
const xtablesDir = "/usr/lib/x86_64-linux-gnu/xtables"

// recipe names the base image's contents: the image is cached per kernel and recipe, so a change
// of what goes into it builds a new one instead of reusing a stale one.
func recipe() string {
	h := fnv.New32a()
	for _, part := range [][]string{loadAtBoot, imageTools, iptablesNames, etcFiles, {xtablesDir, imageModules.String(), initScript}} {
		fmt.Fprintln(h, strings.Join(part, "\x00"))
	}
	return fmt.Sprintf("%08x", h.Sum32())
}

// loadAtBoot are the modules init loads explicitly; everything else in the image is loaded on demand
// by the kernel (nft expressions, conntrack helpers) through /sbin/modprobe.
var loadAtBoot = []string{
	"libcrc32c", "nf_conntrack", "nf_nat", "nf_tables", "nft_chain_nat", "nft_ct",
	"nft_nat", "nft_masq", "nft_numgen", "nft_reject_inet", "nft_fib_inet", "nft_limit",
	"ip_vs", "ip_vs_rr", "ip_vs_wrr", "ip_vs_lc", "ip_vs_wlc", "ip_vs_dh", "ip_vs_sh", "ip_vs_sed",
	"ip_vs_nq", "ip_vs_mh", "veth", "dummy", "bridge", "sctp",
}

// imageModules selects the module files (paths under lib/modules/<ver>/kernel/) copied into the
// image, before their dependencies are added from modules.dep.
var imageModules = regexp.MustCompile(`^kernel/(net/(netfilter|ipv4/netfilter|ipv6/netfilter|bridge|sctp|llc|802)/|` +
	`drivers/net/(dummy|veth)\.ko|crypto/crc32c_generic\.ko|lib/libcrc32c\.ko)`)

// prepare makes sure the host tools exist and the kernel and base image for the VM are cached.
func prepare(ctx context.Context, version string) (*vmEnv, error) {
	if err := ensureHostTools(ctx); err != nil {
		return nil, err
	}
	cache := os.Getenv("HERALD_CACHE")
	if cache == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return nil, err
		}
		cache = filepath.Join(home, ".cache", "herald")
	}
	suffix := "-" + recipe()
	if version == "" {
		v, err := candidateKernel(ctx)
		if err != nil {
			// Offline: fall back to the newest kernel already cached with this recipe.
			cached, _ := filepath.Glob(filepath.Join(cache, "ipvs-vm-*"+suffix, "base.cpio"))
			if len(cached) == 0 {
				return nil, skipError{fmt.Sprintf("cannot find Debian's cloud kernel with apt-cache (%v) and none is cached", err)}
			}
			sort.Strings(cached)
			v = strings.TrimSuffix(strings.TrimPrefix(filepath.Base(filepath.Dir(cached[len(cached)-1])), "ipvs-vm-"), suffix)
		}
		version = v
	}
	dir := filepath.Join(cache, "ipvs-vm-"+version+suffix)
	env := &vmEnv{version: version, vmlinuz: filepath.Join(dir, "vmlinuz"), baseArchive: filepath.Join(dir, "base.cpio")}
	if _, err := os.Stat(env.baseArchive); err == nil {
		return env, nil
	}
	fmt.Fprintf(os.Stderr, "ipvs-vm: building the VM image for kernel %s in %s\n", version, dir)
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp(cache, "ipvs-vm-"+version+".tmp-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	if err := buildImage(ctx, version, tmp); err != nil {
		return nil, err
	}
	if err := os.Rename(filepath.Join(tmp, "image"), dir); err != nil && !os.IsExist(err) {
		// Another run may have finished the same image first; use it if so.
		if _, statErr := os.Stat(env.baseArchive); statErr != nil {
			return nil, err
		}
	}
	return env, nil
}

// ensureHostTools installs missing host tools with apt-get when running as root. Not being able to
// install them is a skip (this machine cannot run the VM), not a failure.
func ensureHostTools(ctx context.Context) error {
	var missing []string
	for _, t := range hostTools {
		if _, err := exec.LookPath(t.bin); err != nil {
			missing = append(missing, t.pkg)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	if os.Geteuid() != 0 {
		return skipError{fmt.Sprintf("missing host packages %v and not root to install them", missing)}
	}
	fmt.Fprintf(os.Stderr, "ipvs-vm: installing %v\n", missing)
	cmd := exec.CommandContext(ctx, "apt-get", append([]string{"install", "-y", "--no-install-recommends"}, missing...)...)
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return skipError{fmt.Sprintf("apt-get install %v: %v", missing, err)}
	}
	return nil
}

var dependsKernel = regexp.MustCompile(`Depends: linux-image-(\S+-cloud-amd64)\b`)

// candidateKernel asks apt which kernel ABI the cloud meta-package currently points at.
func candidateKernel(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "apt-cache", "depends", "linux-image-cloud-amd64").Output()
	if err != nil {
		return "", err
	}
	m := dependsKernel.FindSubmatch(out)
	if m == nil {
		return "", fmt.Errorf("no kernel dependency in %q", out)
	}
	return string(m[1]), nil
}

// buildImage downloads and extracts the kernel package under tmp and writes tmp/image/{vmlinuz,base.cpio}.
func buildImage(ctx context.Context, version, tmp string) error {
	dl := filepath.Join(tmp, "download")
	if err := os.MkdirAll(dl, 0o755); err != nil {
		return err
	}
	get := exec.CommandContext(ctx, "apt-get", "download", "linux-image-"+version)
	get.Dir = dl
	get.Stdout, get.Stderr = os.Stderr, os.Stderr
	if err := get.Run(); err != nil {
		return skipError{fmt.Sprintf("apt-get download linux-image-%s: %v", version, err)}
	}
	debs, _ := filepath.Glob(filepath.Join(dl, "*.deb"))
	if len(debs) != 1 {
		return fmt.Errorf("expected one .deb in %s, found %v", dl, debs)
	}
	pkg := filepath.Join(tmp, "pkg")
	if err := run(ctx, "", "dpkg-deb", "-x", debs[0], pkg); err != nil {
		return err
	}
	image := filepath.Join(tmp, "image")
	root := filepath.Join(tmp, "root")
	for _, d := range []string{image, root} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	if err := copyFile(filepath.Join(pkg, "boot", "vmlinuz-"+version), filepath.Join(image, "vmlinuz"), 0o644); err != nil {
		return err
	}
	if err := stageModules(ctx, pkg, root, version); err != nil {
		return err
	}
	busybox, err := exec.LookPath("busybox")
	if err != nil {
		return err
	}
	if err := copyFile(busybox, filepath.Join(root, "bin", "busybox"), 0o755); err != nil {
		return err
	}
	for _, bin := range imageTools {
		if err := stageDynamicBinary(bin, root); err != nil {
			return err
		}
	}
	multi, err := exec.LookPath("xtables-nft-multi")
	if err != nil {
		return err
	}
	for _, name := range iptablesNames {
		if err := os.Symlink("xtables-nft-multi", filepath.Join(root, filepath.Dir(multi), name)); err != nil {
			return err
		}
	}
	if err := copyDir(xtablesDir, filepath.Join(root, xtablesDir)); err != nil {
		return err
	}
	for _, f := range etcFiles {
		if err := copyFile(f, filepath.Join(root, f), 0o644); err != nil {
			return err
		}
	}
	if err := os.WriteFile(filepath.Join(root, "init"), []byte(initScript), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(root, "etc", "herald-modules"), []byte(strings.Join(loadAtBoot, "\n")+"\n"), 0o644); err != nil {
		return err
	}
	f, err := os.Create(filepath.Join(image, "base.cpio"))
	if err != nil {
		return err
	}
	defer f.Close()
	return cpioDir(root, f)
}

// stageModules copies the selected modules and their dependencies into root and runs depmod there.
func stageModules(ctx context.Context, pkg, root, version string) error {
	src := filepath.Join(pkg, "lib", "modules", version)
	if err := run(ctx, "", "depmod", "-b", pkg, version); err != nil {
		return err
	}
	deps, err := readModulesDep(filepath.Join(src, "modules.dep"))
	if err != nil {
		return err
	}
	want := map[string]bool{}
	var add func(string)
	add = func(m string) {
		if want[m] {
			return
		}
		want[m] = true
		for _, d := range deps[m] {
			add(d)
		}
	}
	for m := range deps {
		if imageModules.MatchString(m) {
			add(m)
		}
	}
	for _, name := range loadAtBoot {
		found := false
		for m := range want {
			if strings.TrimSuffix(filepath.Base(m), ".ko") == name {
				found = true
			}
		}
		if !found {
			return fmt.Errorf("module %s is not in kernel %s", name, version)
		}
	}
	dst := filepath.Join(root, "lib", "modules", version)
	for m := range want {
		if err := copyFile(filepath.Join(src, m), filepath.Join(dst, m), 0o644); err != nil {
			return err
		}
	}
	for _, f := range []string{"modules.builtin", "modules.builtin.modinfo", "modules.order"} {
		if err := copyFile(filepath.Join(src, f), filepath.Join(dst, f), 0o644); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
		return err
	}
	return run(ctx, "", "depmod", "-b", root, version)
}

// readModulesDep parses modules.dep: "kernel/a.ko: kernel/b.ko kernel/c.ko".
func readModulesDep(path string) (map[string][]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	deps := map[string][]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		mod, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		deps[mod] = strings.Fields(rest)
	}
	return deps, sc.Err()
}

var lddPath = regexp.MustCompile(`(/\S+)`)

// stageDynamicBinary copies a host binary and the shared libraries ldd lists into root at the same
// paths, so it runs inside the VM (knftables needs the nft binary).
func stageDynamicBinary(name, root string) error {
	bin, err := exec.LookPath(name)
	if err != nil {
		return err
	}
	out, err := exec.Command("ldd", bin).Output()
	if err != nil {
		return fmt.Errorf("ldd %s: %w", bin, err)
	}
	files := []string{bin}
	for _, line := range strings.Split(string(out), "\n") {
		if m := lddPath.FindString(line); m != "" {
			files = append(files, m)
		}
	}
	for _, f := range files {
		real, err := filepath.EvalSymlinks(f)
		if err != nil {
			return err
		}
		if err := copyFile(real, filepath.Join(root, f), 0o755); err != nil {
			return err
		}
	}
	return nil
}

// copyDir copies the files of src (symbolic links followed; not its subdirectories) into dst.
func copyDir(src, dst string) error {
	entries, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if !e.IsDir() {
			if err := copyFile(filepath.Join(src, e.Name()), filepath.Join(dst, e.Name()), 0o644); err != nil {
				return err
			}
		}
	}
	return nil
}

func copyFile(src, dst string, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func run(ctx context.Context, dir, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %w", name, strings.Join(args, " "), err)
	}
	return nil
}

// initScript is PID 1 in the VM: mount the basics, load modules, run the payload with its output on
// ttyS1, report its exit status with a marker, power off. A watchdog powers off if the payload hangs.
const initScript = `#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /tmp /run /var /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/tmp
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
ln -s /run /var/run
for m in $(cat /etc/herald-modules); do modprobe "$m" || echo "init: modprobe $m failed"; done
ip link set lo up
stty -F /dev/ttyS1 raw -echo
out=/dev/ttyS1
wd=$(cat /herald/watchdog)
( sleep "$wd"; echo "init: the payload ran longer than ${wd}s, powering off" >$out; echo "HERALD-VM-EXIT 124" >$out; poweroff -f ) &
cd /tmp
HERALD_REQUIRE_REAL=1 HERALD_IN_VM=1 /herald/run >$out 2>&1 </dev/null
echo "HERALD-VM-EXIT $?" >$out
sync
poweroff -f
`
