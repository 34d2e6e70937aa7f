package lab

import (
	"slices"
	"strings"
	"testing"

	"github.com/heraldlb/herald/charts"
	"github.com/heraldlb/herald/internal/testenv"
)

func renderWorkloads(t *testing.T, values ...string) charts.Workloads {
	t.Helper()
	if _, err := charts.Helm(); err != nil {
		testenv.Missing(t, "%v", err)
	}
	w, err := charts.RenderWorkloads(values...)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// TestTranslateChart translates the real chart's containers.
func TestTranslateChart(t *testing.T) {
	pod := podContext{Node: "node1", Namespace: HeraldNamespace, SecretDir: "/lab/speaker-key", BinDir: "/lab/bin"}
	w := renderWorkloads(t, "dataplane.mode=nftables", "logLevel=debug")

	spk, err := translate(&w.Speaker, "speaker", pod)
	if err != nil {
		t.Fatal(err)
	}
	wantArgv := []string{"/lab/bin/speaker", "--node-name=node1", "--secret-file=/lab/speaker-key/key", "--dataplane=nftables", "--nodeport-addresses=primary",
		"--metrics-addr=:9651", "--lb-class=herald.io/lb", "--log-level=debug"}
	if !slices.Equal(spk.Argv, wantArgv) {
		t.Errorf("speaker argv %q\nwant %q", spk.Argv, wantArgv)
	}
	if !slices.Equal(spk.Env, []string{"NODE_NAME=node1", "POD_NAMESPACE=herald-system"}) {
		t.Errorf("speaker env %q", spk.Env)
	}
	cmd := strings.Join(spk.command(), " ")
	if wantPrefix := "setpriv --bounding-set=-all,+net_admin,+net_raw,+sys_nice,+net_bind_service --inh-caps=-all --no-new-privs -- /lab/bin/speaker "; !strings.HasPrefix(cmd, wantPrefix) {
		t.Errorf("speaker command %q, want it to start with %q", cmd, wantPrefix)
	}

	ctrl, err := translate(&w.Controller, "controller", podContext{Namespace: HeraldNamespace, BinDir: "/lab/bin"})
	if err != nil {
		t.Fatal(err)
	}
	if ctrl.UID == nil || *ctrl.UID != 65532 || len(ctrl.Caps) != 0 || ctrl.Privileged {
		t.Errorf("controller: uid %v caps %v privileged %v, want 65532, none, no", ctrl.UID, ctrl.Caps, ctrl.Privileged)
	}
	if cmd := strings.Join(ctrl.command(), " "); !strings.Contains(cmd, "--bounding-set=-all --inh-caps=-all --no-new-privs --reuid=65532 --regid=65532 --clear-groups -- /lab/bin/controller --mode=native") {
		t.Errorf("controller command %q", cmd)
	}

	// Defaults (data plane auto): the speaker runs on capabilities; its sysctls init step and the
	// cleanup step are privileged, run as they are.
	w = renderWorkloads(t)
	spk, err = translate(&w.Speaker, "speaker", pod)
	if err != nil {
		t.Fatal(err)
	}
	if spk.Privileged || !strings.HasPrefix(strings.Join(spk.command(), " "), "setpriv ") {
		t.Errorf("default speaker: privileged %v, command %q", spk.Privileged, spk.command())
	}
	prep, err := translate(&w.Speaker, "sysctls", pod)
	if err != nil {
		t.Fatal(err)
	}
	if !prep.Privileged || !slices.Equal(prep.command(), []string{"/lab/bin/speaker", "--prepare-sysctls", "--dataplane=auto"}) {
		t.Errorf("sysctls init step: privileged %v, command %q", prep.Privileged, prep.command())
	}
	clean, err := translate(&w.Cleanup, "cleanup", pod)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(clean.command(), []string{"/lab/bin/speaker", "--cleanup", "--dataplane=auto"}) {
		t.Errorf("cleanup command %q", clean.command())
	}
}

func TestExpand(t *testing.T) {
	vars := map[string]string{"NODE_NAME": "node2", "X": "$(NODE_NAME)"}
	for in, want := range map[string]string{
		"--node-name=$(NODE_NAME)": "--node-name=node2",
		"$$(NODE_NAME)":            "$(NODE_NAME)",
		"$(UNDEFINED)":             "$(UNDEFINED)",
		"$(X)":                     "$(NODE_NAME)", // values are not expanded twice
		"a$$b":                     "a$b",
	} {
		if got := expand(in, vars); got != want {
			t.Errorf("expand(%q) = %q, want %q", in, got, want)
		}
	}
}
