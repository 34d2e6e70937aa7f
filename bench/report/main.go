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
	"os"
	"sort"
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

func table(figures []Figure) string {
	var b bytes.Buffer
	b.WriteString("| figure | value | target | measured by | date |\n|---|---|---|---|---|\n")
	for _, f := range figures {
		fmt.Fprintf(&b, "| %s | %s %s | %s | `%s` | %s |\n", f.Figure, formatValue(f.Value), f.Unit, f.Target, f.Command, f.Date)
	}
	return b.String()
}

func formatValue(v float64) string {
	if v == float64(int64(v)) {
		return fmt.Sprintf("%d", int64(v))
	}
	return fmt.Sprintf("%.3g", v)
}

func replaceTable(text, table string) (string, error) {
	start := strings.Index(text, tableStart)
	end := strings.Index(text, tableEnd)
	if start < 0 || end < start {
		return "", fmt.Errorf("no %s … %s markers", tableStart, tableEnd)
	}
	return text[:start+len(tableStart)] + "\n" + table + text[end:], nil
}
