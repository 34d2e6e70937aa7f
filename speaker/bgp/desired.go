package bgp

import "github.com/heraldlb/herald/config/bgpconfig"

// The announcer converges on what the translation in config/bgpconfig resolved from the API
// objects; these are its types, named here so the announcer's API reads on its own.
type (
	Desired    = bgpconfig.Desired
	Peer       = bgpconfig.Peer
	BFD        = bgpconfig.BFD
	Attributes = bgpconfig.Attributes
)
