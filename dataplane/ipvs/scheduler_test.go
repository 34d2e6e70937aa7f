package ipvs

import "testing"

func TestParseScheduler(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		bad      bool
	}{
		{"", "rr", false}, {"mh", "mh", false}, {" wlc ", "wlc", false},
		{"RR", "rr", true}, {"lblc", "rr", true}, {"fo", "rr", true},
	} {
		got, err := ParseScheduler(tc.in)
		if got != tc.want || (err != nil) != tc.bad {
			t.Errorf("ParseScheduler(%q) = %q, %v; want %q, error %v", tc.in, got, err, tc.want, tc.bad)
		}
	}
}
