// Command ipvs-vm runs a Go test binary (or any static program) inside a small virtual machine booted
// from Debian's cloud kernel, which ships ip_vs, its schedulers, dummy, veth, SCTP and nf_tables as
// modules. This machine's kernel lacks ip_vs, dummy and SCTP, so the IPVS backend is tested here.
//
//	go run ./hack/ipvs-vm -test ./dataplane/ipvs,./dataplane/backendspec
//	go run ./hack/ipvs-vm -build ./bench/ipvs -- -services 10000
//	go run ./hack/ipvs-vm -m 4096 -test ./e2e/parity -file docs/parity.md \
//		-file $HERALD_CACHE/etcd-v3.6.5/etcd=/herald/cache/etcd-v3.6.5/etcd -env HERALD_CACHE=/herald/cache
//
// A test binary runs in /herald/tree/<its package's directory>, as `go test` runs it in the
// package's directory; -file PATH puts the file PATH (relative to the module) at the same place
// under /herald/tree, so a test reading ../../docs/x.md finds it; -file SRC=DEST puts SRC at the
// absolute path DEST (binaries the tests run). -env K=V sets a variable for every payload.
//
// The kernel package is fetched once with apt-get download and cached, with a base initramfs (busybox,
// modules, nft, ipvsadm and their libraries), under ${HERALD_CACHE:-$HOME/.cache/herald}/ipvs-vm-<ver>/.
// Each run appends a second cpio archive holding the payload and boots qemu with no network device at
// all (-nic none); tests create their own namespaces inside the VM. The payload's output comes back
// over a second serial port (ttyS1) so kernel messages on the console never mix into it; init writes
// "HERALD-VM-EXIT <status>" when the payload ends and powers off. A watchdog inside the VM and a
// deadline on the host make sure a run can never hang.
//
// When qemu or the kernel cannot be obtained (no apt, not root), the run is skipped with exit status 0,
// unless HERALD_REQUIRE_REAL=1: then it fails, so CI never passes by skipping.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

const exitMarker = "HERALD-VM-EXIT "

func main() {
	var (
		testPkg  = flag.String("test", "", "comma-separated packages to compile with 'go test -c' and run one after the other in the VM")
		buildPkg = flag.String("build", "", "main package to compile with 'go build' and run in the VM")
		binPath  = flag.String("bin", "", "static binary (CGO_ENABLED=0) to run in the VM as it is")
		kernel   = flag.String("kernel", os.Getenv("HERALD_IPVS_KERNEL"), "Debian kernel ABI, e.g. 6.1.0-56-cloud-amd64 (default: apt's candidate of linux-image-cloud-amd64)")
		timeout  = flag.Duration("timeout", 20*time.Minute, "hard limit for the whole VM run")
		memory   = flag.String("m", "2048", "VM memory in MiB")
		console  = flag.Bool("console", false, "print the kernel console as well (it is always printed on failure)")
		files    []extraFile
		envVars  []string
	)
	flag.Func("file", "PATH (relative, put at /herald/tree/PATH) or SRC=DEST (DEST absolute): a file the payload needs; repeatable", func(v string) error {
		f, err := parseExtraFile(v)
		files = append(files, f)
		return err
	})
	flag.Func("env", "K=V: an environment variable for every payload; repeatable", func(v string) error {
		if k, _, ok := strings.Cut(v, "="); !ok || k == "" {
			return fmt.Errorf("%q is not K=V", v)
		}
		envVars = append(envVars, v)
		return nil
	})
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: ipvs-vm (-test PKG[,PKG...] | -build PKG | -bin FILE) [flags] [-- payload args]\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if n := btoi(*testPkg != "") + btoi(*buildPkg != "") + btoi(*binPath != ""); n != 1 {
		flag.Usage()
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()

	env, err := prepare(ctx, *kernel)
	if err != nil {
		var skip skipError
		if errors.As(err, &skip) && os.Getenv("HERALD_REQUIRE_REAL") != "1" {
			fmt.Printf("ipvs-vm: SKIP: %v (set HERALD_REQUIRE_REAL=1 to make this a failure)\n", err)
			return
		}
		fatalf("%v", err)
	}
	work, err := os.MkdirTemp("", "herald-ipvs-vm-")
	if err != nil {
		fatalf("%v", err)
	}
	// The work directory holds the payload archive (hundreds of MB with the Kubernetes
	// binaries): removed on every way out, so it runs in a function of its own.
	code, err := runVM(ctx, env, work, *testPkg, *buildPkg, *binPath, files, envVars, *timeout, *memory, *console)
	if rmErr := os.RemoveAll(work); rmErr != nil {
		fmt.Fprintf(os.Stderr, "ipvs-vm: %v\n", rmErr)
	}
	cancel()
	if err != nil {
		fatalf("%v", err)
	}
	os.Exit(code)
}

// runVM builds the payloads in work, boots the VM and returns the exit status for the run.
func runVM(ctx context.Context, env *vmEnv, work, testPkg, buildPkg, binPath string, files []extraFile, envVars []string,
	timeout time.Duration, memory string, console bool) (int, error) {
	var payloads []payload
	if testPkg != "" {
		for i, pkg := range strings.Split(testPkg, ",") {
			p := payload{pkg: pkg, file: filepath.Join(work, fmt.Sprintf("payload%d", i)), dir: path.Join(treeDir, path.Clean(pkg)),
				// Verbose output is how results are counted; a later -test.v in args still wins.
				args: append([]string{"-test.v"}, flag.Args()...)}
			if err := goBuild(ctx, p.file, "test", "-c", pkg); err != nil {
				return 0, err
			}
			payloads = append(payloads, p)
		}
	} else if buildPkg != "" {
		p := payload{pkg: buildPkg, file: filepath.Join(work, "payload0"), args: flag.Args()}
		if err := goBuild(ctx, p.file, "build", buildPkg); err != nil {
			return 0, err
		}
		payloads = append(payloads, p)
	} else {
		p := payload{pkg: binPath, file: filepath.Join(work, "payload0"), args: flag.Args()}
		if err := copyFile(binPath, p.file, 0o755); err != nil {
			return 0, err
		}
		payloads = append(payloads, p)
	}
	initrd := filepath.Join(work, "initrd")
	if err := writeInitrd(initrd, env.baseArchive, payloads, files, envVars, timeout); err != nil {
		return 0, fmt.Errorf("initrd: %w", err)
	}
	start := time.Now()
	res, err := boot(ctx, env, initrd, work, memory, console)
	if err != nil {
		return 0, err
	}
	fmt.Printf("ipvs-vm: kernel %s, %.1fs in the VM: %d passed, %d failed, %d skipped, exit status %d\n",
		env.version, time.Since(start).Seconds(), res.passed, res.failed, res.skipped, res.exit)
	switch {
	case res.exit < 0:
		return 0, fmt.Errorf("the payload did not finish (no %q marker): see the console above", strings.TrimSpace(exitMarker))
	case res.exit != 0 || res.failed > 0:
		return 1, nil
	case testPkg != "" && res.passed == 0:
		return 0, errors.New("no test passed in the VM")
	}
	return 0, nil
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// skipError means a prerequisite is unavailable on this machine (as opposed to broken).
type skipError struct{ msg string }

func (e skipError) Error() string { return e.msg }

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "ipvs-vm: FAIL: "+format+"\n", args...)
	os.Exit(1)
}

// goBuild compiles a static binary for the VM (no cgo: the VM has no libc for Go programs).
func goBuild(ctx context.Context, out string, args ...string) error {
	args = append(args[:1], append([]string{"-o", out}, args[1:]...)...)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go %s: %w", strings.Join(args, " "), err)
	}
	return nil
}

// payload is one program to run in the VM.
type payload struct {
	pkg  string
	file string
	args []string
	// dir is where it runs (a test: its package's directory under treeDir); empty: /tmp.
	dir string
}

// treeDir mirrors the module's tree in the VM: test binaries run in their package's directory
// there, and -file PATH puts files at their place in it.
const treeDir = "/herald/tree"

// extraFile is a file of -file: src on the host, dst in the VM.
type extraFile struct{ src, dst string }

func parseExtraFile(v string) (extraFile, error) {
	src, dst, ok := strings.Cut(v, "=")
	switch {
	case !ok && !filepath.IsLocal(src):
		return extraFile{}, fmt.Errorf("-file %s: a path without =DEST must be relative, inside the module", v)
	case !ok:
		return extraFile{src: src, dst: path.Join(treeDir, filepath.ToSlash(src))}, nil
	case !path.IsAbs(dst):
		return extraFile{}, fmt.Errorf("-file %s: DEST must be absolute", v)
	}
	return extraFile{src: src, dst: path.Clean(dst)}, nil
}

// shellQuote quotes s for sh.
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// writeInitrd concatenates the cached base archive with a second cpio archive holding the payloads,
// the extra files and the script init runs; the kernel unpacks concatenated archives in order.
func writeInitrd(dst, base string, payloads []payload, files []extraFile, env []string, timeout time.Duration) error {
	stage, err := os.MkdirTemp(filepath.Dir(dst), "stage-")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(stage, "herald"), 0o755); err != nil {
		return err
	}
	for _, f := range files {
		if err := linkOrCopy(f.src, filepath.Join(stage, filepath.FromSlash(f.dst))); err != nil {
			return fmt.Errorf("-file %s: %w", f.src, err)
		}
	}
	// The run script runs every payload, even after a failure, and exits non-zero if any failed.
	run := "#!/bin/sh\nrc=0\n"
	for _, e := range env {
		run += "export " + shellQuote(e) + "\n"
	}
	for i, p := range payloads {
		name := fmt.Sprintf("payload%d", i)
		if err := os.Rename(p.file, filepath.Join(stage, "herald", name)); err != nil {
			return err
		}
		quoted := make([]string, len(p.args))
		for j, a := range p.args {
			quoted[j] = shellQuote(a)
		}
		dir := "/tmp"
		if p.dir != "" {
			dir = p.dir
			if err := os.MkdirAll(filepath.Join(stage, filepath.FromSlash(dir)), 0o755); err != nil {
				return err
			}
		}
		run += fmt.Sprintf("echo '### %s'\n(cd %s && /herald/%s %s) || rc=1\n", p.pkg, shellQuote(dir), name, strings.Join(quoted, " "))
	}
	run += "exit $rc\n"
	if err := os.WriteFile(filepath.Join(stage, "herald", "run"), []byte(run), 0o755); err != nil {
		return err
	}
	// The watchdog inside the VM fires before the host's deadline so its marker is still seen.
	watchdog := fmt.Sprintf("%d\n", int(max(timeout-30*time.Second, timeout/2).Seconds()))
	if err := os.WriteFile(filepath.Join(stage, "herald", "watchdog"), []byte(watchdog), 0o644); err != nil {
		return err
	}
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	defer out.Close()
	in, err := os.Open(base)
	if err != nil {
		return err
	}
	defer in.Close()
	if _, err := io.Copy(out, in); err != nil {
		return err
	}
	return cpioDir(stage, out)
}

// linkOrCopy puts src at dst, a hard link where it can (the Kubernetes binaries are 100 MB each).
func linkOrCopy(src, dst string) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	real, err := filepath.EvalSymlinks(src)
	if err != nil {
		return err
	}
	if os.Link(real, dst) == nil {
		return nil
	}
	fi, err := os.Stat(real)
	if err != nil {
		return err
	}
	return copyFile(real, dst, fi.Mode().Perm())
}

// cpioDir writes dir as a newc cpio archive to w.
func cpioDir(dir string, w io.Writer) error {
	find := exec.Command("sh", "-c", "find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0")
	find.Dir = dir
	find.Stdout = w
	find.Stderr = os.Stderr
	if err := find.Run(); err != nil {
		return fmt.Errorf("cpio %s: %w", dir, err)
	}
	return nil
}

type result struct {
	passed, failed, skipped int
	exit                    int // -1 when the marker never came
}

var testLine = regexp.MustCompile(`^\s*--- (PASS|FAIL|SKIP): `)

// boot runs qemu until the guest powers off or ctx ends, streaming the payload's output (ttyS1) to
// stdout and counting test results in it.
func boot(ctx context.Context, env *vmEnv, initrd, work, memory string, showConsole bool) (result, error) {
	consoleLog := filepath.Join(work, "console.log")
	outLog := filepath.Join(work, "payload.out")
	res := result{exit: -1}
	cmd := exec.CommandContext(ctx, "qemu-system-x86_64",
		"-smp", "2", "-accel", "tcg,thread=multi", "-m", memory,
		"-nographic", "-no-reboot", "-nic", "none", "-monitor", "none",
		"-serial", "file:"+consoleLog, "-serial", "file:"+outLog,
		"-kernel", env.vmlinuz, "-initrd", initrd,
		"-append", "console=ttyS0 panic=-1 quiet loglevel=4")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		return res, fmt.Errorf("qemu: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	// Follow the payload's output file while qemu runs, one complete line at a time.
	var pending []byte
	var offset int64
	consume := func() {
		f, err := os.Open(outLog)
		if err != nil {
			return
		}
		defer f.Close()
		b, _ := io.ReadAll(io.NewSectionReader(f, offset, 1<<40))
		offset += int64(len(b))
		pending = append(pending, b...)
		for {
			i := bytes.IndexByte(pending, '\n')
			if i < 0 {
				return
			}
			res.addLine(strings.TrimRight(string(pending[:i]), "\r"))
			pending = pending[i+1:]
		}
	}
	var waitErr error
	for running := true; running; {
		select {
		case waitErr = <-exited:
			running = false
		case <-time.After(200 * time.Millisecond):
		}
		consume()
	}
	if len(pending) > 0 {
		res.addLine(strings.TrimRight(string(pending), "\r"))
	}
	if showConsole || res.exit != 0 || waitErr != nil {
		if b, err := os.ReadFile(consoleLog); err == nil {
			fmt.Fprintf(os.Stderr, "----- VM console -----\n%s\n----- end of VM console -----\n", b)
		}
	}
	if ctx.Err() != nil {
		return res, fmt.Errorf("the VM run exceeded its time limit (%w)", ctx.Err())
	}
	if waitErr != nil {
		return res, fmt.Errorf("qemu: %w", waitErr)
	}
	return res, nil
}

// addLine prints one line of payload output and counts test results and the exit marker in it.
func (r *result) addLine(line string) {
	if rest, ok := strings.CutPrefix(line, exitMarker); ok {
		if _, err := fmt.Sscanf(rest, "%d", &r.exit); err != nil {
			fmt.Println(line) // a garbled marker: shown, the exit status left as it was
		}
		return
	}
	fmt.Println(line)
	if m := testLine.FindStringSubmatch(line); m != nil {
		switch m[1] {
		case "PASS":
			r.passed++
		case "FAIL":
			r.failed++
		case "SKIP":
			r.skipped++
		}
	}
}
