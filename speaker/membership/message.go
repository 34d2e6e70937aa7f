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
//	"HRLD" | version (1) | name length (1) | name | epoch (8) | seq (8) | sent unix nanos (8) |
//	payload length (4) | payload | HMAC-SHA256 of everything before (32)
const (
	magic       = "HRLD"
	wireVersion = 1
	macSize     = sha256.Size
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
	Name    string
	Epoch   uint64 // sender's boot time in unix nanoseconds: grows on every restart
	Seq     uint64 // grows with every message within an epoch
	SentNS  int64  // sender's clock at send time, unix nanoseconds
	Payload []byte
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
	b := make([]byte, 0, len(magic)+2+len(m.Name)+28+len(m.Payload)+macSize)
	b = append(b, magic...)
	b = append(b, wireVersion, byte(len(m.Name)))
	b = append(b, m.Name...)
	b = binary.BigEndian.AppendUint64(b, m.Epoch)
	b = binary.BigEndian.AppendUint64(b, m.Seq)
	b = binary.BigEndian.AppendUint64(b, uint64(m.SentNS))
	b = binary.BigEndian.AppendUint32(b, uint32(len(m.Payload)))
	b = append(b, m.Payload...)
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
	if p[0] != wireVersion {
		return nil, fmt.Errorf("unsupported version %d", p[0])
	}
	nameLen := int(p[1])
	p = p[2:]
	if nameLen == 0 || len(p) < nameLen+28 {
		return nil, errMalformed
	}
	m := &message{Name: string(p[:nameLen])}
	p = p[nameLen:]
	m.Epoch = binary.BigEndian.Uint64(p)
	m.Seq = binary.BigEndian.Uint64(p[8:])
	m.SentNS = int64(binary.BigEndian.Uint64(p[16:]))
	n := binary.BigEndian.Uint32(p[24:])
	p = p[28:]
	if uint32(len(p)) != n {
		return nil, errMalformed
	}
	m.Payload = append([]byte(nil), p...)
	return m, nil
}
