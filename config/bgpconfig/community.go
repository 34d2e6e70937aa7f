package bgpconfig

import (
	"fmt"
	"strconv"
	"strings"
)

// community is one parsed community value: standard (RFC 1997) or large (RFC 8092).
type community struct {
	large bool
	text  string // "65000:1" or "64512:1:2", as GoBGP's policy actions take them
}

// parseCommunity reads "a:b" (each 0-65535), "large:a:b:c" (each 0-4294967295), or a well-known
// name GoBGP also knows (no-export, no-advertise, no-export-subconfed, blackhole).
func parseCommunity(s string) (community, error) {
	s = strings.TrimSpace(s)
	if wk, ok := wellKnownCommunities[strings.ToLower(s)]; ok {
		return community{text: wk}, nil
	}
	if rest, ok := strings.CutPrefix(s, "large:"); ok {
		parts := strings.Split(rest, ":")
		if len(parts) != 3 {
			return community{}, fmt.Errorf("large community %q: want large:GLOBAL:LOCAL1:LOCAL2", s)
		}
		for _, p := range parts {
			if _, err := strconv.ParseUint(p, 10, 32); err != nil {
				return community{}, fmt.Errorf("large community %q: %q is not a number from 0 to 4294967295", s, p)
			}
		}
		return community{large: true, text: rest}, nil
	}
	parts := strings.Split(s, ":")
	if len(parts) != 2 {
		return community{}, fmt.Errorf("community %q: want A:B (each 0-65535), large:A:B:C, or the name of a Community alias", s)
	}
	for _, p := range parts {
		if _, err := strconv.ParseUint(p, 10, 16); err != nil {
			return community{}, fmt.Errorf("community %q: %q is not a number from 0 to 65535", s, p)
		}
	}
	return community{text: s}, nil
}

var wellKnownCommunities = map[string]string{
	"no-export":           "65535:65281",
	"no-advertise":        "65535:65282",
	"no-export-subconfed": "65535:65283",
	"blackhole":           "65535:666",
}
