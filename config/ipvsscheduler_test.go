package config

import "testing"

func TestParseIPVSScheduler(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		bad      bool
	}{
		{"", "rr", false}, {"mh", "mh", false}, {" wlc ", "wlc", false},
		{"RR", "rr", true}, {"lblc", "rr", true}, {"fo", "rr", true},
	} {
		got, err := ParseIPVSScheduler(tc.in)
		if got != tc.want || (err != nil) != tc.bad {
			t.Errorf("ParseIPVSScheduler(%q) = %q, %v; want %q, error %v", tc.in, got, err, tc.want, tc.bad)
		}
	}
}
