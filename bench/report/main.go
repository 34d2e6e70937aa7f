// Command report collects benchmark figures into bench/results.json and renders the README's
// results table from it.
//
// Benchmarks print one line per figure: `BENCH {"figure": "...", "value": 1.5, "unit": "s",
// "target": "< 5 s", "command": "make bench"}`. report reads those lines from stdin, stamps each
// with the date, replaces in results.json every figure measured by the same command (so one
// benchmark can be rerun alone, and a figure it no longer prints, such as a percentile "of N" whose
// N changed, does not linger), and rewrites the table between the README's markers.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"math"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Figure is one measured number.
type Figure struct {
	Figure  string  `json:"figure"`
	Value   float64 `json:"value"`
	Unit    string  `json:"unit"`
	Target  string  `json:"target,omitempty"`
	Command string  `json:"command"`
	Date    string  `json:"date"`
}

const (
	linePrefix  = "BENCH "
	tableStart  = "<!-- bench:start -->"
	tableEnd    = "<!-- bench:end -->"
	timeFormat  = "2006-01-02"
	resultsMode = 0o644
)

func main() {
	results := flag.String("results", "bench/results.json", "the figures kept so far")
	readme := flag.String("readme", "README.md", "the README whose table is rewritten")
	flag.Parse()

	kept, err := load(*results)
	if err != nil {
		log.Fatal(err)
	}
	fresh, err := parse(os.Stdin, time.Now().UTC().Format(timeFormat))
	if err != nil {
		log.Fatal(err)
	}
	merged := merge(kept, fresh)
	out, err := json.MarshalIndent(merged, "", "  ")
	if err != nil {
		log.Fatal(err)
	}
	if err := os.WriteFile(*results, append(out, '\n'), resultsMode); err != nil {
		log.Fatal(err)
	}
	text, err := os.ReadFile(*readme)
	if err != nil {
		log.Fatal(err)
	}
	updated, err := replaceTable(string(text), table(merged))
	if err != nil {
		log.Fatalf("%s: %v", *readme, err)
	}
	if err := os.WriteFile(*readme, []byte(updated), resultsMode); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("report: %d new figures, %d in %s\n", len(fresh), len(merged), *results)
}

func load(path string) ([]Figure, error) {
	data, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var figures []Figure
	if err := json.Unmarshal(data, &figures); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return figures, nil
}

// parse reads benchmark output and keeps the BENCH lines; everything else passes through to stderr
// so a benchmark's own progress stays visible.
func parse(r io.Reader, date string) ([]Figure, error) {
	var figures []Figure
	scanner := bufio.NewScanner(r)
	scanner.Buffer(make([]byte, 1<<20), 1<<20)
	for scanner.Scan() {
		line := scanner.Text()
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), linePrefix)
		if !ok {
			fmt.Fprintln(os.Stderr, line)
			continue
		}
		var f Figure
		if err := json.Unmarshal([]byte(rest), &f); err != nil {
			return nil, fmt.Errorf("bad figure %q: %w", line, err)
		}
		if f.Figure == "" || f.Command == "" {
			return nil, fmt.Errorf("figure %q needs a name and the command that measures it", line)
		}
		f.Date = date
		figures = append(figures, f)
	}
	return figures, scanner.Err()
}

func merge(kept, fresh []Figure) []Figure {
	rerun := map[string]bool{}
	for _, f := range fresh {
		rerun[f.Command] = true
	}
	byName := map[string]Figure{}
	for _, f := range kept {
		if !rerun[f.Command] {
			byName[f.Figure] = f
		}
	}
	for _, f := range fresh {
		byName[f.Figure] = f
	}
	merged := make([]Figure, 0, len(byName))
	for _, f := range byName {
		merged = append(merged, f)
	}
	sort.Slice(merged, func(i, j int) bool { return merged[i].Figure < merged[j].Figure })
	return merged
}

// table renders the figures as one table per area (the benchmark that measured them), each figure
// with the peer's figure for the same measurement beside it where the same run measured one.
func table(figures []Figure) string {
	byArea := map[string][]Figure{}
	var areas []string
	for _, f := range figures {
		a := area(f.Command)
		if _, ok := byArea[a]; !ok {
			areas = append(areas, a)
		}
		byArea[a] = append(byArea[a], f)
	}
	sort.Strings(areas)
	var b bytes.Buffer
	for i, a := range areas {
		if i > 0 {
			b.WriteString("\n")
		}
		fmt.Fprintf(&b, "**%s** (`%s`)\n\n", a, byArea[a][0].Command)
		b.WriteString("| figure | Herald | peer, same run | target | date |\n|---|---|---|---|---|\n")
		peers := map[string]Figure{}
		for _, f := range byArea[a] {
			if subject, what, ok := strings.Cut(f.Figure, ": "); ok && !strings.HasPrefix(subject, "Herald") {
				peers[what] = f
			}
		}
		shown := map[string]bool{}
		for _, f := range byArea[a] {
			subject, what, _ := strings.Cut(f.Figure, ": ")
			if p, ok := peers[what]; ok && strings.HasPrefix(subject, "Herald") {
				shown[p.Figure] = true
				fmt.Fprintf(&b, "| %s | %s | %s: %s | %s | %s |\n", f.Figure, humanValue(f.Value, f.Unit),
					strings.SplitN(p.Figure, ": ", 2)[0], humanValue(p.Value, p.Unit), f.Target, f.Date)
			}
		}
		for _, f := range byArea[a] {
			subject, what, _ := strings.Cut(f.Figure, ": ")
			if shown[f.Figure] || (strings.HasPrefix(subject, "Herald") && peers[what].Figure != "") {
				continue
			}
			fmt.Fprintf(&b, "| %s | %s |  | %s | %s |\n", f.Figure, humanValue(f.Value, f.Unit), f.Target, f.Date)
		}
	}
	return b.String()
}

// area names a figure's benchmark from its command (BENCH_ONLY=bgp make bench: bgp).
func area(command string) string {
	for _, w := range strings.Fields(command) {
		if a, ok := strings.CutPrefix(w, "BENCH_ONLY="); ok {
			return a
		}
	}
	return command
}

// humanValue writes a value as a person reads it: in the larger unit past a thousand of the smaller
// (2,039 ms is 2.04 s), three significant digits, thousands grouped, never an exponent.
func humanValue(v float64, unit string) string {
	switch {
	case unit == "ms" && math.Abs(v) >= 1000:
		v, unit = v/1000, "s"
	case unit == "s" && math.Abs(v) < 1 && v != 0:
		v, unit = v*1000, "ms"
	case unit == "MiB" && math.Abs(v) >= 1024:
		v, unit = v/1024, "GiB"
	}
	return strings.TrimSpace(formatNumber(v) + " " + unit)
}

func formatNumber(v float64) string {
	a := math.Abs(v)
	switch {
	case a >= 1000:
		return groupThousands(int64(math.Round(v)))
	case v == math.Trunc(v):
		return strconv.FormatInt(int64(v), 10)
	case a >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case a >= 1:
		return strconv.FormatFloat(v, 'f', 2, 64)
	default: // three significant digits; 'g' writes an exponent only below 0.0001
		return strconv.FormatFloat(v, 'g', 3, 64)
	}
}

func groupThousands(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

func replaceTable(text, table string) (string, error) {
	start := strings.Index(text, tableStart)
	end := strings.Index(text, tableEnd)
	if start < 0 || end < start {
		return "", fmt.Errorf("no %s … %s markers", tableStart, tableEnd)
	}
	return text[:start+len(tableStart)] + "\n" + table + text[end:], nil
}
