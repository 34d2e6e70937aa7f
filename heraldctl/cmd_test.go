package heraldctl

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// run executes heraldctl with args and returns its exit code, stdout and stderr.
func run(t *testing.T, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := Execute(context.Background(), args, Streams{In: strings.NewReader(stdin), Out: &out, Err: &errOut})
	return code, out.String(), errOut.String()
}

func TestMigrateMetalLBFromFiles(t *testing.T) {
	code, out, errOut := run(t, "", "migrate", "metallb", "-f", "migrate/testdata/metallb.yaml")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	// stdout is only YAML, so it can be piped to kubectl apply.
	if !strings.HasPrefix(out, "apiVersion: herald.io/v1beta1\n") || strings.Contains(out, "note:") {
		t.Errorf("stdout is not pure YAML:\n%s", out)
	}
	if n := strings.Count(out, "\nkind: "); n != 7 {
		t.Errorf("%d objects on stdout, want 7", n)
	}
	if !strings.Contains(errOut, "7 Herald objects written; 0 untranslated, 0 warnings, 1 notes") {
		t.Errorf("stderr summary missing:\n%s", errOut)
	}
}

func TestMigrateMetalLBFromStdinReportsUntranslated(t *testing.T) {
	code, _, errOut := run(t, "apiVersion: metallb.io/v1beta2\nkind: BGPPeer\nmetadata: {name: u}\nspec: {myASN: 1, peerASN: 2, interface: eth0}\n",
		"migrate", "metallb", "-f", "-")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, want := range []string{"untranslated: metallb.io/v1beta2 BGPPeer u (standard input, document 1)", "1 untranslated", "review the untranslated items"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errOut)
		}
	}
}

func TestErrorsSayWhatToTry(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"migrate", "metallb", "--kubeconfig", "/nonexistent/kubeconfig"}, "or translate saved manifests with -f FILE|DIR"},
		{[]string{"migrate", "metallb", "-f", "/nonexistent/dir"}, "check the path given to -f"},
		{[]string{"migrate", "metallb", "extra"}, `unknown command "extra"`},
		{[]string{"bogus"}, `unknown command "bogus" for "heraldctl"`},
	} {
		code, _, errOut := run(t, "", tc.args...)
		if code != 1 || !strings.Contains(errOut, tc.want) {
			t.Errorf("heraldctl %v: exit %d, stderr %q; want exit 1 and %q", tc.args, code, errOut, tc.want)
		}
	}
}
