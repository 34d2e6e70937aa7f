// Package bgpconfig resolves the BGP API objects (BGPPeer, BGPAdvertisement, Community,
// BFDProfile, with the pools and Services they select) into what one node's BGP announcer should
// do (Translate), and checks them, and the L2Advertisements' selections, for every node at once
// (Validate). It is pure: no client, no
// GoBGP. It lives under config/ so that the speaker (speaker/bgp announces the result) and the
// controller (which turns Validate's Problems into Valid and NotSupported conditions) share one
// reading of the objects without the controller importing the speaker.
package bgpconfig
