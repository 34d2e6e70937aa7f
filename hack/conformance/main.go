// Command conformance serves hack/conformance.sh, which runs Kubernetes' own e2e tests (e2e.test)
// against the lab's real cluster with Herald as the service proxy and again with kube-proxy:
//
//	conformance focus -selection FILE [-shard I -shards N]
//	                                        prints one --ginkgo.focus regexp per selected test (of shard I)
//	conformance report -selection FILE -run NAME=REPORT.json... -out FILE.md [-must-pass NAME]
//	                                        writes the side-by-side results and prints BENCH lines
//
// The selection file (e2e/conformance/selection.txt) has one line per test, `in: NAME ## why` or
// `out: NAME ## why`; the ginkgo JSON reports come from e2e.test --ginkgo.json-report.
package main

import (
	"bufio"
	"cmp"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"regexp"
	"sort"
	"strings"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		log.Fatal("usage: conformance focus|report ...")
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	selection := fs.String("selection", "e2e/conformance/selection.txt", "the selection file")
	out := fs.String("out", "", "report: the markdown file to write")
	shard := fs.Int("shard", 0, "focus: which shard (0-based) of -shards to print")
	shards := fs.Int("shards", 1, "focus: how many shards the selected tests are split into")
	mustPass := fs.String("must-pass", "", "report: exit 1 when a selected test failed in the run of this NAME")
	var runs []string
	fs.Func("run", "report: NAME=REPORT.json[,REPORT.json...] (ginkgo JSON reports of one run's shards; repeatable, in column order)", func(v string) error {
		runs = append(runs, v)
		return nil
	})
	_ = fs.Parse(os.Args[2:])
	sel, err := readSelection(*selection)
	if err != nil {
		log.Fatal(err)
	}
	switch os.Args[1] {
	case "focus":
		// -shard I/N: every Nth selected test from the Ith, for N e2e.test processes side by side.
		i := 0
		for _, s := range sel {
			if !s.In {
				continue
			}
			if *shards <= 1 || i%*shards == *shard {
				fmt.Println(focusRegexp(s.Name))
			}
			i++
		}
	case "report":
		if *out == "" || len(runs) == 0 {
			log.Fatal("report: -out and at least one -run are required")
		}
		var results []run
		for _, r := range runs {
			name, paths, ok := strings.Cut(r, "=")
			if !ok {
				log.Fatalf("-run %q: want NAME=REPORT.json[,REPORT.json...]", r)
			}
			res, err := readShards(name, strings.Split(paths, ","))
			if err != nil {
				log.Fatal(err)
			}
			results = append(results, res)
		}
		f, err := os.Create(*out)
		if err != nil {
			log.Fatal(err)
		}
		writeReport(f, sel, results)
		if err := f.Close(); err != nil {
			log.Fatal(err)
		}
		writeBench(os.Stdout, sel, results)
		for _, r := range results {
			if r.Name == *mustPass {
				if c, o := r.count(sel, true), r.count(sel, false); c.failed+o.failed > 0 {
					log.Fatalf("%s: %d selected tests failed (%s)", r.Name, c.failed+o.failed, *out)
				}
			}
		}
	default:
		log.Fatalf("unknown command %q (focus, report)", os.Args[1])
	}
}

// Selected is one line of the selection file.
type Selected struct {
	In   bool
	Name string // the test's full name as ginkgo reports it
	Why  string
}

var selLine = regexp.MustCompile(`^(in|out):\s*(.+?)\s*##\s*(.+)$`)

func readSelection(path string) ([]Selected, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return parseSelection(f)
}

func parseSelection(r io.Reader) ([]Selected, error) {
	var out []Selected
	seen := map[string]bool{}
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		m := selLine.FindStringSubmatch(line)
		if m == nil {
			return nil, fmt.Errorf("line %d: want `in: NAME ## why` or `out: NAME ## why`: %q", n, line)
		}
		if seen[m[2]] {
			return nil, fmt.Errorf("line %d: %q listed twice", n, m[2])
		}
		seen[m[2]] = true
		out = append(out, Selected{In: m[1] == "in", Name: m[2], Why: m[3]})
	}
	return out, sc.Err()
}

// focusRegexp matches exactly the test named name (ginkgo matches the focus against the full text).
// Some names end in a space (the test's own text does), which the selection file cannot hold; and
// the text ginkgo matches starts with a space (an empty outer container), not the name.
func focusRegexp(name string) string { return `(^|\s)` + regexp.QuoteMeta(name) + `\s*$` }

// Spec is one test's outcome.
type Spec struct {
	State   string        // passed, failed, skipped, ... (ginkgo's names)
	RunTime time.Duration //
	Failure string        // the failure's message, first line
}

type run struct {
	Name  string
	Specs map[string]Spec
	Wall  time.Duration
}

// ginkgo's JSON report, the parts we read.
type suiteReport struct {
	RunTime     time.Duration `json:"RunTime"`
	SpecReports []struct {
		ContainerHierarchyTexts []string      `json:"ContainerHierarchyTexts"`
		LeafNodeType            string        `json:"LeafNodeType"`
		LeafNodeText            string        `json:"LeafNodeText"`
		State                   string        `json:"State"`
		RunTime                 time.Duration `json:"RunTime"`
		Failure                 *struct {
			Message string `json:"Message"`
		} `json:"Failure"`
	} `json:"SpecReports"`
}

func readReport(path string) (map[string]Spec, time.Duration, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, 0, err
	}
	var suites []suiteReport
	if err := json.Unmarshal(b, &suites); err != nil {
		return nil, 0, err
	}
	if len(suites) == 0 {
		return nil, 0, errors.New("no suite in the report")
	}
	specs := map[string]Spec{}
	var wall time.Duration
	for _, s := range suites {
		wall += s.RunTime
		for _, r := range s.SpecReports {
			if r.LeafNodeType != "It" {
				continue
			}
			name := strings.TrimSpace(strings.Join(append(append([]string{}, r.ContainerHierarchyTexts...), r.LeafNodeText), " "))
			sp := Spec{State: r.State, RunTime: r.RunTime}
			if r.Failure != nil {
				sp.Failure, _, _ = strings.Cut(strings.TrimSpace(r.Failure.Message), "\n")
			}
			specs[name] = sp
		}
	}
	return specs, wall, nil
}

// readShards merges the reports of one run's shards (e2e.test processes side by side).
func readShards(name string, paths []string) (run, error) {
	res := run{Name: name, Specs: map[string]Spec{}}
	for _, path := range paths {
		specs, wall, err := readReport(path)
		if err != nil {
			return res, fmt.Errorf("%s: %w", path, err)
		}
		// Every shard reports every spec, those of the other shards as skipped.
		for name, sp := range specs {
			if old, ok := res.Specs[name]; !ok || old.State == "skipped" {
				res.Specs[name] = sp
			}
		}
		// Shards run side by side: the run took as long as the longest.
		res.Wall = max(res.Wall, wall)
	}
	return res, nil
}

// outcome is a selected test's result in one run; a test the run did not report did not run.
func (r run) outcome(name string) Spec {
	if s, ok := r.Specs[name]; ok {
		return s
	}
	return Spec{State: "not run"}
}

type counts struct{ passed, failed, skipped, other int }

func (r run) count(sel []Selected, conformance bool) counts {
	var c counts
	for _, s := range sel {
		if !s.In || isConformance(s.Name) != conformance {
			continue
		}
		switch r.outcome(s.Name).State {
		case "passed":
			c.passed++
		case "failed", "panicked", "timedout", "interrupted", "aborted":
			c.failed++
		case "skipped":
			c.skipped++
		default:
			c.other++
		}
	}
	return c
}

func isConformance(name string) bool { return strings.Contains(name, "[Conformance]") }

func writeReport(w io.Writer, sel []Selected, runs []run) {
	fmt.Fprintf(w, "# Kubernetes e2e Services tests: %s\n\n", names(runs))
	fmt.Fprintf(w, "Written by hack/conformance.sh (`make conformance`) on %s; the selection and why each test is in\nor out: e2e/conformance/selection.txt.\n\n", time.Now().UTC().Format("2006-01-02 15:04 UTC"))
	fmt.Fprintln(w, "| run | conformance passed / failed / skipped | other selected passed / failed / skipped | e2e.test wall time |")
	fmt.Fprintln(w, "|---|---|---|---|")
	for _, r := range runs {
		c, o := r.count(sel, true), r.count(sel, false)
		fmt.Fprintf(w, "| %s | %d / %d / %d | %d / %d / %d | %s |\n", r.Name, c.passed, c.failed, c.skipped+c.other,
			o.passed, o.failed, o.skipped+o.other, r.Wall.Round(time.Second))
	}
	fmt.Fprintf(w, "\n| test |")
	for _, r := range runs {
		fmt.Fprintf(w, " %s |", r.Name)
	}
	fmt.Fprintf(w, "\n|---|%s\n", strings.Repeat("---|", len(runs)))
	sorted := append([]Selected{}, sel...)
	sort.SliceStable(sorted, func(i, j int) bool { return isConformance(sorted[i].Name) && !isConformance(sorted[j].Name) })
	for _, s := range sorted {
		if !s.In {
			continue
		}
		fmt.Fprintf(w, "| %s |", s.Name)
		for _, r := range runs {
			o := r.outcome(s.Name)
			cell := o.State
			if o.RunTime > 0 {
				cell += fmt.Sprintf(" (%s)", o.RunTime.Round(time.Second))
			}
			if o.Failure != "" {
				cell += ": " + strings.ReplaceAll(o.Failure, "|", `\|`)
			}
			fmt.Fprintf(w, " %s |", cell)
		}
		fmt.Fprintln(w)
	}
}

func names(runs []run) string {
	var n []string
	for _, r := range runs {
		n = append(n, r.Name)
	}
	return strings.Join(n, " vs ")
}

// benchSubject names a run in the figures, as bench/report pairs them: Herald's beside its peer's.
var benchSubject = map[string]string{"herald": "Herald", "kube-proxy": "kube-proxy v1.34.4 nftables"}

// writeBench prints the figures bench/report records (bench/cluster/run.sh).
func writeBench(w io.Writer, sel []Selected, runs []run) {
	total, conformance := 0, 0
	for _, s := range sel {
		if s.In {
			total++
			if isConformance(s.Name) {
				conformance++
			}
		}
	}
	for _, r := range runs {
		c, o := r.count(sel, true), r.count(sel, false)
		subject := cmp.Or(benchSubject[r.Name], r.Name)
		for _, f := range []struct {
			name  string
			value float64
			unit  string
		}{
			{fmt.Sprintf("%s: [sig-network] Services [Conformance] tests passed, of %d", subject, conformance), float64(c.passed), "tests"},
			{fmt.Sprintf("%s: [sig-network] Services [Conformance] tests failed, of %d", subject, conformance), float64(c.failed), "tests"},
			{fmt.Sprintf("%s: selected Services tests passed (e2e/conformance/selection.txt), of %d", subject, total), float64(c.passed + o.passed), "tests"},
			{subject + ": e2e.test wall time for the selection (3 shards side by side)", r.Wall.Seconds(), "s"},
		} {
			b, _ := json.Marshal(map[string]any{"figure": f.name, "value": f.value, "unit": f.unit, "command": "BENCH_ONLY=cluster make bench"})
			fmt.Fprintf(w, "BENCH %s\n", b)
		}
	}
}
