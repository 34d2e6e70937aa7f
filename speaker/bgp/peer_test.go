package bgp

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	api "github.com/osrg/gobgp/v4/api"

	"github.com/heraldlb/herald/speaker/bfd"
)

func TestAPIPeer(t *testing.T) {
	p := Peer{
		Name: "tor", MyASN: 64512, ASN: 64500, Address: netip.MustParseAddr("fd00::1"), Port: 1179,
		SourceAddress: netip.MustParseAddr("fd00::5"), HoldTime: 9 * time.Second, KeepaliveTime: 3 * time.Second,
		ConnectTime: 5 * time.Second, EBGPMultiHop: true, Password: "pw", GracefulRestart: true,
		BFD: &BFD{ReceiveInterval: 100 * time.Millisecond, TransmitInterval: 200 * time.Millisecond, DetectMultiplier: 3},
	}
	a := apiPeer(p)
	c := a.Conf
	if c.NeighborAddress != "fd00::1" || c.PeerAsn != 64500 || c.LocalAsn != 64512 || c.AuthPassword != "pw" {
		t.Errorf("conf = %+v", c)
	}
	if a.Transport.RemotePort != 1179 || a.Transport.LocalAddress != "fd00::5" {
		t.Errorf("transport = %+v", a.Transport)
	}
	if tc := a.Timers.Config; tc.HoldTime != 9 || tc.KeepaliveInterval != 3 || tc.ConnectRetry != 5 {
		t.Errorf("timers = %+v", tc)
	}
	if !a.EbgpMultihop.Enabled || a.EbgpMultihop.MultihopTtl != 255 {
		t.Errorf("multihop = %+v", a.EbgpMultihop)
	}
	if !a.GracefulRestart.Enabled || !a.AfiSafis[0].MpGracefulRestart.Config.Enabled || !a.GracefulRestart.LocalRestarting {
		t.Errorf("graceful restart = %+v", a.GracefulRestart)
	}
	if f := a.AfiSafis[0].Config.Family; f.Afi != api.Family_AFI_IP6 || len(a.AfiSafis) != 1 {
		t.Errorf("families = %+v", a.AfiSafis)
	}
	if a.Bfd != nil {
		t.Errorf("GoBGP's own BFD is on (speaker/bfd runs the sessions): %+v", a.Bfd)
	}
	if c, ok := bfdSession(p); !ok || c != (bfd.Config{
		Peer: p.Address, Local: p.SourceAddress, Multihop: true, DesiredMinTx: 200 * time.Millisecond,
		RequiredMinRx: 100 * time.Millisecond, Multiplier: 3,
	}) {
		t.Errorf("BFD session = %+v %v", c, ok)
	}

	plain := apiPeer(Peer{Name: "x", MyASN: 1, ASN: 2, Address: netip.MustParseAddr("10.0.0.1")})
	if _, ok := bfdSession(Peer{Name: "x"}); ok {
		t.Error("a peer without a BFD profile has a BFD session")
	}
	if plain.GracefulRestart != nil || plain.EbgpMultihop != nil || plain.Transport.LocalAddress != "" {
		t.Errorf("defaults set options: %+v", plain)
	}
}

func TestSameNeighbor(t *testing.T) {
	a := Peer{Name: "a", HoldTime: 9 * time.Second, BFD: &BFD{DetectMultiplier: 3}}
	b := Peer{Name: "a", HoldTime: 9 * time.Second, BFD: &BFD{DetectMultiplier: 4}}
	if !sameNeighbor(a, b) || !sameNeighbor(a, Peer{Name: "a", HoldTime: 9 * time.Second}) {
		t.Error("a BFD change would replace the BGP session")
	}
	b.HoldTime = 3 * time.Second
	if sameNeighbor(a, b) {
		t.Error("different hold times need the same neighbor")
	}
}

func TestNotEstablishedReason(t *testing.T) {
	p := Peer{MyASN: 64512, ASN: 64500, Address: netip.MustParseAddr("10.0.0.1")}
	md5 := p
	md5.Password = "x"
	withBFD := p
	withBFD.BFD = &BFD{DetectMultiplier: 3}
	for _, c := range []struct {
		peer      Peer
		h         sessionHistory
		bfdFailed bool
		want      string
	}{
		{withBFD, sessionHistory{opened: true, reason: api.PeerState_DISCONNECT_REASON_NOTIFICATION_SENT, message: "notification-sent code 6(cease) subcode 3(peer deconfigured)"}, true, "BFD detected"},
		{withBFD, sessionHistory{opened: true, reason: api.PeerState_DISCONNECT_REASON_HOLD_TIMER_EXPIRED}, false, "hold timer expired"},
		{p, sessionHistory{}, false, "no TCP connection to 10.0.0.1:179"},
		{md5, sessionHistory{}, false, "check the password"},
		{p, sessionHistory{opened: true, reason: api.PeerState_DISCONNECT_REASON_BAD_PEER_AS}, false, "wrong ASN"},
		{p, sessionHistory{opened: true, reason: api.PeerState_DISCONNECT_REASON_NOTIFICATION_RECEIVED, message: "notification-received code open subcode bad peer AS"}, false, "wrong ASN"},
		{p, sessionHistory{opened: true, reason: api.PeerState_DISCONNECT_REASON_HOLD_TIMER_EXPIRED}, false, "hold timer expired"},
	} {
		if got := notEstablishedReason(c.peer, c.h, c.bfdFailed); !strings.Contains(got, c.want) {
			t.Errorf("reason(%+v) = %q, want it to say %q", c.h, got, c.want)
		}
	}
}

func TestGroupNames(t *testing.T) {
	a := Attributes{Communities: []string{"1:1"}}
	if groupName("p", a) != groupName("p", Attributes{Communities: []string{"1:1"}}) {
		t.Error("group names are not stable")
	}
	if groupName("p", a) == groupName("p", Attributes{Communities: []string{"1:1"}, LocalPref: 1}) ||
		groupName("p", a) == groupName("q", a) {
		t.Error("different groups share a name")
	}
	pol := groupPolicy("p", groupName("p", a), a)
	st := pol.Statements[0]
	if st.Conditions.NeighborSet.Name != neighborSetName("p") || st.Conditions.PrefixSet.Name != pol.Name ||
		st.Actions.Community.Communities[0] != "1:1" || st.Actions.LocalPref != nil ||
		st.Actions.RouteAction != api.RouteAction_ROUTE_ACTION_ACCEPT {
		t.Errorf("policy = %+v", pol)
	}
}
