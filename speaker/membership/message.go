package membership

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
)

// Wire format of a heartbeat (all integers big endian):
//
//	version 2: "HRLD" | 2 | name length (1) | name | epoch (8) | seq (8) | sent unix nanos (8) |
//	           payload version (8) | acked version (8) | flags (1) | payload length (4) | payload |
//	           HMAC-SHA256 of everything before (32)
//	version 1: "HRLD" | 1 | name length (1) | name | epoch (8) | seq (8) | sent unix nanos (8) |
//	           payload length (4) | payload | HMAC-SHA256 of everything before (32)
//
// Version 2 carries the payload only to a peer that does not hold its current version yet (each
// heartbeat says which version of the receiver's payload the sender holds), so at steady state a
// heartbeat is about a hundred bytes whatever the payload. Version 1 (speakers before it) carries
// the whole payload in every heartbeat; a speaker sends version 1 to a peer it last heard speak
// version 1, and accepts both.
const (
	magic       = "HRLD"
	wireV1      = 1
	wireV2      = 2
	macSize     = sha256.Size
	flagCarries = 1 // the payload is included
	// MaxPayload bounds the application state a heartbeat carries, so a message fits a UDP
	// datagram (fragmented on the segment if needed).
	MaxPayload = 60 << 10
)

var (
	errBadMAC    = errors.New("bad MAC (wrong key or corrupted)")
	errMalformed = errors.New("malformed message")
)

// message is one heartbeat.
type message struct {
	Version uint8 // wireV1 or wireV2
	Name    string
	Epoch   uint64 // sender's boot time in unix nanoseconds: grows on every restart
	Seq     uint64 // grows with every message within an epoch
	SentNS  int64  // sender's clock at send time, unix nanoseconds
	// Version 2 only: the version of the sender's payload (unique across its restarts), the
	// version of the receiver's payload the sender holds, and whether Payload is included.
	PayloadVersion uint64
	Acked          uint64
	Carries        bool
	Payload        []byte
}

// DeriveKey turns the shared secret into the HMAC key, so the secret itself is never used
// directly and a secret reused elsewhere does not give the same key.
func DeriveKey(secret []byte) []byte {
	m := hmac.New(sha256.New, []byte("herald.io membership v1"))
	m.Write(secret)
	return m.Sum(nil)
}

func (m *message) marshal(key []byte) ([]byte, error) {
	if len(m.Name) == 0 || len(m.Name) > 255 {
		return nil, fmt.Errorf("node name length %d out of range 1..255", len(m.Name))
	}
	if len(m.Payload) > MaxPayload {
		return nil, fmt.Errorf("payload of %d bytes exceeds %d", len(m.Payload), MaxPayload)
	}
	version := m.Version
	if version == 0 {
		version = wireV2
	}
	b := make([]byte, 0, len(magic)+2+len(m.Name)+45+len(m.Payload)+macSize)
	b = append(b, magic...)
	b = append(b, version, byte(len(m.Name)))
	b = append(b, m.Name...)
	b = binary.BigEndian.AppendUint64(b, m.Epoch)
	b = binary.BigEndian.AppendUint64(b, m.Seq)
	b = binary.BigEndian.AppendUint64(b, uint64(m.SentNS))
	payload := m.Payload
	if version == wireV2 {
		b = binary.BigEndian.AppendUint64(b, m.PayloadVersion)
		b = binary.BigEndian.AppendUint64(b, m.Acked)
		var flags byte
		if m.Carries {
			flags |= flagCarries
		} else {
			payload = nil
		}
		b = append(b, flags)
	}
	b = binary.BigEndian.AppendUint32(b, uint32(len(payload)))
	b = append(b, payload...)
	mac := hmac.New(sha256.New, key)
	mac.Write(b)
	return mac.Sum(b), nil
}

// unmarshal checks the MAC first and parses only authenticated bytes.
func unmarshal(b []byte, key []byte) (*message, error) {
	if len(b) < len(magic)+2+28+macSize || string(b[:len(magic)]) != magic {
		return nil, errMalformed
	}
	body, sum := b[:len(b)-macSize], b[len(b)-macSize:]
	mac := hmac.New(sha256.New, key)
	mac.Write(body)
	if !hmac.Equal(mac.Sum(nil), sum) {
		return nil, errBadMAC
	}
	p := body[len(magic):]
	m := &message{Version: p[0]}
	fixed := 28 // epoch, seq, sent, payload length
	switch m.Version {
	case wireV1:
	case wireV2:
		fixed += 17 // payload version, acked, flags
	default:
		return nil, fmt.Errorf("unsupported version %d", p[0])
	}
	nameLen := int(p[1])
	p = p[2:]
	if nameLen == 0 || len(p) < nameLen+fixed {
		return nil, errMalformed
	}
	m.Name = string(p[:nameLen])
	p = p[nameLen:]
	m.Epoch = binary.BigEndian.Uint64(p)
	m.Seq = binary.BigEndian.Uint64(p[8:])
	m.SentNS = int64(binary.BigEndian.Uint64(p[16:]))
	p = p[24:]
	m.Carries = true
	if m.Version == wireV2 {
		m.PayloadVersion = binary.BigEndian.Uint64(p)
		m.Acked = binary.BigEndian.Uint64(p[8:])
		m.Carries = p[16]&flagCarries != 0
		p = p[17:]
	}
	n := binary.BigEndian.Uint32(p)
	p = p[4:]
	if uint32(len(p)) != n || (!m.Carries && n != 0) {
		return nil, errMalformed
	}
	m.Payload = append([]byte(nil), p...)
	return m, nil
}
