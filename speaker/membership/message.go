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
//	           payload version (8) | acked version (8) | flags (1) | [chunk index (2) | chunks (2)] |
//	           payload length (4) | payload | HMAC-SHA256 of everything before (32)
//	version 1: "HRLD" | 1 | name length (1) | name | epoch (8) | seq (8) | sent unix nanos (8) |
//	           payload length (4) | payload | HMAC-SHA256 of everything before (32)
//
// Version 2 carries the payload only to a peer that does not hold its current version yet (each
// heartbeat says which version of the receiver's payload the sender holds), so at steady state a
// heartbeat is about a hundred bytes whatever the payload. Version 1 (speakers before it) carries
// the whole payload in every heartbeat; a speaker sends version 1 to a peer it last heard speak
// version 1, and accepts both.
//
// A payload larger than one datagram holds (MaxPayload) travels in chunks: each chunk is a whole
// heartbeat of its own (its own seq and MAC) with flagChunk set and the chunk's index and the
// payload's chunk count after the flags. Only a peer whose heartbeats set flagTakesChunks gets
// them: a version 2 speaker from before chunks would misread the chunk fields, and it ignores a
// flag bit it does not know, so the capability flag is safe to send to everyone.
const (
	magic   = "HRLD"
	wireV1  = 1
	wireV2  = 2
	macSize = sha256.Size
	// Flags of version 2.
	flagCarries     = 1 // the payload (or, with flagChunk, one chunk of it) is included
	flagChunk       = 2 // the included bytes are one chunk of the payload
	flagTakesChunks = 4 // the sender accepts chunked payloads
	// MaxPayload bounds the payload one heartbeat carries, so a message fits a UDP datagram
	// (fragmented on the segment if needed): the whole payload for peers that do not take
	// chunks, one chunk for those that do.
	MaxPayload = 60 << 10
	// MaxChunks bounds a chunked payload to MaxChunks × MaxPayload (3.75 MiB), so a receiver's
	// reassembly memory per peer is bounded however a peer (with the key) behaves.
	MaxChunks = 64
	// MaxChunkedPayload is the largest payload a member can send to peers that take chunks.
	MaxChunkedPayload = MaxChunks * MaxPayload
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
	// TakesChunks: the sender accepts chunked payloads. Chunks > 0: Payload is chunk number
	// Chunk of the payload's Chunks chunks (Carries is set too).
	TakesChunks   bool
	Chunk, Chunks uint16
	Payload       []byte
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
		if m.TakesChunks {
			flags |= flagTakesChunks
		}
		if m.Carries && m.Chunks > 0 {
			if m.Chunk >= m.Chunks || m.Chunks > MaxChunks {
				return nil, fmt.Errorf("chunk %d of %d out of range (at most %d chunks)", m.Chunk, m.Chunks, MaxChunks)
			}
			b = append(b, flags|flagChunk)
			b = binary.BigEndian.AppendUint16(b, m.Chunk)
			b = binary.BigEndian.AppendUint16(b, m.Chunks)
		} else {
			b = append(b, flags)
		}
	}
	if len(payload) > MaxPayload {
		return nil, fmt.Errorf("payload of %d bytes exceeds %d", len(payload), MaxPayload)
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
		flags := p[16]
		m.Carries, m.TakesChunks = flags&flagCarries != 0, flags&flagTakesChunks != 0
		p = p[17:]
		if flags&flagChunk != 0 {
			if !m.Carries || len(p) < 4+4 {
				return nil, errMalformed
			}
			m.Chunk, m.Chunks = binary.BigEndian.Uint16(p), binary.BigEndian.Uint16(p[2:])
			if m.Chunks == 0 || m.Chunks > MaxChunks || m.Chunk >= m.Chunks {
				return nil, errMalformed
			}
			p = p[4:]
		}
	}
	n := binary.BigEndian.Uint32(p)
	p = p[4:]
	if uint32(len(p)) != n || (!m.Carries && n != 0) {
		return nil, errMalformed
	}
	m.Payload = append([]byte(nil), p...)
	return m, nil
}
