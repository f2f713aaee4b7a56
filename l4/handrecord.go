//go:build linux

package l4

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"lb/metrics"
)

// A handover record is what a spliced connection needs to go on in another process, besides
// its two sockets: fixed-size, little-endian, a version byte first, so a batch is a run of
// records and a reader can tell a record of another version from garbage.
//
//	off size
//	  0    1  version (recordVersion)
//	  1    1  flags: 1 client end at EOF, 2 backend end at EOF, 4 a sticky mode decided,
//	          8 it holds one of its address's connections (per-address limits)
//	  2    1  firstFIN: 0 none, 1 client, 2 backend
//	  3    1  sniff (metrics.SniffKind)
//	  4    1  sticky (metrics.StickyResult)
//	  5    1  client address family: 0 none, 4, 6
//	  6    2  client port
//	  8    8  start, unix nanos
//	 16    8  lastActive, unix nanos
//	 24    8  bytes moved client → backend
//	 32    8  bytes moved backend → client
//	 40   16  client address (IPv4 in the first 4 bytes)
//	 56   64  listener address: a length byte, then up to 63 bytes
//	120   64  pool name, the same way
//	184   64  backend id, the same way
const (
	recordVersion = 1
	recordSize    = 248
	nameSize      = 64 // a length byte and up to 63 bytes
)

const (
	flagClientEOF = 1 << iota
	flagBackendEOF
	flagStickied
	flagAdmitted
	flagsKnown = flagClientEOF | flagBackendEOF | flagStickied | flagAdmitted
)

var (
	errRecordSize    = errors.New("handover record of the wrong size")
	errRecordVersion = errors.New("handover record of an unknown version")
	errRecordField   = errors.New("handover record with a field out of range")
	errNameTooLong   = errors.New("name too long for a handover record")
)

// moveRecord is a connection as a handover record carries it.
type moveRecord struct {
	eof               [2]bool
	stickied          bool
	admitted          bool // counted in its address's connections (per-address limits)
	firstFIN          int8
	sniff             metrics.SniffKind
	sticky            metrics.StickyResult
	client            netip.AddrPort
	start, lastActive int64
	moved             [2]uint64 // by the side the bytes came from, as end.moved
	listener          string
	pool, backend     string
}

// appendRecord appends r's record to b. A name longer than 63 bytes is an error: that
// connection cannot be moved.
func appendRecord(b []byte, r *moveRecord) ([]byte, error) {
	var flags byte
	if r.eof[clientSide] {
		flags |= flagClientEOF
	}
	if r.eof[backendSide] {
		flags |= flagBackendEOF
	}
	if r.stickied {
		flags |= flagStickied
	}
	if r.admitted {
		flags |= flagAdmitted
	}
	var family byte
	var addr [16]byte
	switch ip := r.client.Addr(); {
	case ip.Is4():
		a4 := ip.As4()
		family = 4
		copy(addr[:], a4[:])
	case ip.Is6():
		family, addr = 6, ip.As16()
	}
	b = append(b, recordVersion, flags, byte(r.firstFIN), byte(r.sniff), byte(r.sticky), family)
	b = binary.LittleEndian.AppendUint16(b, r.client.Port())
	b = binary.LittleEndian.AppendUint64(b, uint64(r.start))
	b = binary.LittleEndian.AppendUint64(b, uint64(r.lastActive))
	b = binary.LittleEndian.AppendUint64(b, r.moved[clientSide])
	b = binary.LittleEndian.AppendUint64(b, r.moved[backendSide])
	b = append(b, addr[:]...)
	for _, name := range [...]string{r.listener, r.pool, r.backend} {
		if len(name) >= nameSize {
			return b, fmt.Errorf("%w: %q", errNameTooLong, name)
		}
		b = append(b, byte(len(name)))
		b = append(b, name...)
		b = append(b, make([]byte, nameSize-1-len(name))...)
	}
	return b, nil
}

// decodeRecord reads one record. A record of another size or version, or with a field out of
// range, is an error.
func decodeRecord(b []byte) (moveRecord, error) {
	var r moveRecord
	if len(b) != recordSize {
		return r, fmt.Errorf("%w: %d bytes, want %d", errRecordSize, len(b), recordSize)
	}
	if b[0] != recordVersion {
		return r, fmt.Errorf("%w: %d", errRecordVersion, b[0])
	}
	flags, family := b[1], b[5]
	if flags&^flagsKnown != 0 || b[2] > backendSide+1 || metrics.SniffKind(b[3]) >= metrics.NumSniffKinds ||
		metrics.StickyResult(b[4]) >= metrics.NumStickyResults || family != 0 && family != 4 && family != 6 {
		return r, errRecordField
	}
	r.eof = [2]bool{flags&flagClientEOF != 0, flags&flagBackendEOF != 0}
	r.stickied, r.admitted = flags&flagStickied != 0, flags&flagAdmitted != 0
	r.firstFIN, r.sniff, r.sticky = int8(b[2]), metrics.SniffKind(b[3]), metrics.StickyResult(b[4])
	port := binary.LittleEndian.Uint16(b[6:])
	r.start = int64(binary.LittleEndian.Uint64(b[8:]))
	r.lastActive = int64(binary.LittleEndian.Uint64(b[16:]))
	r.moved = [2]uint64{binary.LittleEndian.Uint64(b[24:]), binary.LittleEndian.Uint64(b[32:])}
	switch family {
	case 4:
		r.client = netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[40:44])), port)
	case 6:
		r.client = netip.AddrPortFrom(netip.AddrFrom16([16]byte(b[40:56])), port)
	}
	var names [3]string
	for i := range names {
		f := b[56+i*nameSize : 56+(i+1)*nameSize]
		if int(f[0]) >= nameSize {
			return r, errRecordField
		}
		names[i] = string(f[1 : 1+f[0]])
	}
	r.listener, r.pool, r.backend = names[0], names[1], names[2]
	return r, nil
}
