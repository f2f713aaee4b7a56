package httpsniff

import (
	"bytes"
	"crypto/ecdh"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	mrand "math/rand/v2"
	"net"
	"slices"
	"strconv"
	"testing"
	"time"

	"lb/internal/tlstest"
)

// captureClientHello is the ClientHello a real crypto/tls client with cfg sends first.
func captureClientHello(t testing.TB, cfg *tls.Config) []byte { return tlstest.ClientHello(t, cfg) }

// serverSees feeds records to a real crypto/tls server and returns the ClientHelloInfo it
// passes to GetConfigForClient, or nil if it never got that far.
func serverSees(t testing.TB, records []byte) *tls.ClientHelloInfo {
	t.Helper()
	c, s := net.Pipe()
	var seen *tls.ClientHelloInfo
	errStop := errors.New("seen")
	done := make(chan struct{})
	go func() {
		defer close(done)
		tls.Server(s, &tls.Config{GetConfigForClient: func(hi *tls.ClientHelloInfo) (*tls.Config, error) {
			seen = &tls.ClientHelloInfo{ServerName: hi.ServerName, SupportedProtos: slices.Clone(hi.SupportedProtos)}
			return nil, errStop
		}}).Handshake()
		s.Close()
	}()
	go io.Copy(io.Discard, c) // the server's alert
	c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	c.Write(records) // cut short when the server gives up
	c.Close()
	<-done
	return seen
}

// fragment re-records the handshake bytes of records with a record boundary after each
// offset in cuts (offsets into the handshake stream).
func fragment(t testing.TB, records []byte, cuts ...int) []byte {
	t.Helper()
	var hs []byte
	for b := records; len(b) > 0; {
		n := int(binary.BigEndian.Uint16(b[3:]))
		hs = append(hs, b[5:5+n]...)
		b = b[5+n:]
	}
	var out []byte
	prev := 0
	for _, c := range append(cuts, len(hs)) {
		if c <= prev || c > len(hs) {
			continue
		}
		out = append(out, recordHandshake, 3, 1, byte((c-prev)>>8), byte(c-prev))
		out = append(out, hs[prev:c]...)
		prev = c
	}
	return out
}

// echConfigList builds an ECHConfigList (draft-ietf-tls-esni §4) for an X25519 key, so that
// a crypto/tls client sends encrypted_client_hello with publicName as its outer SNI.
func echConfigList(t testing.TB, publicName string) []byte {
	t.Helper()
	key, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u16 := func(b []byte, v int) []byte { return binary.BigEndian.AppendUint16(b, uint16(v)) }
	pub := key.PublicKey().Bytes()
	var c []byte
	c = append(c, 7)   // config_id
	c = u16(c, 0x0020) // DHKEM(X25519, HKDF-SHA256)
	c = append(u16(c, len(pub)), pub...)
	c = u16(u16(u16(c, 4), 0x0001), 0x0001) // HKDF-SHA256, AES-128-GCM
	c = append(c, 64)                       // maximum_name_length
	c = append(append(c, byte(len(publicName))), publicName...)
	c = u16(c, 0) // no extensions
	cfg := append(u16(u16(nil, 0xfe0d), len(c)), c...)
	return append(u16(nil, len(cfg)), cfg...)
}

type helloCase struct {
	name string
	cfg  *tls.Config
	sni  string // the name lb routes on
	alpn []string
	ech  bool
	min  int // the ClientHello is at least this long
}

func helloCases(t testing.TB) []helloCase {
	return []helloCase{
		{name: "sni+alpn", cfg: &tls.Config{ServerName: "a.test", NextProtos: []string{"h2", "http/1.1"}}, sni: "a.test", alpn: []string{"h2", "http/1.1"}},
		{name: "http1.1 only", cfg: &tls.Config{ServerName: "B.Example.COM", NextProtos: []string{"http/1.1"}}, sni: "B.Example.COM", alpn: []string{"http/1.1"}},
		{name: "no sni", cfg: &tls.Config{InsecureSkipVerify: true}},
		{name: "tls1.2 only", cfg: &tls.Config{ServerName: "old.test", MaxVersion: tls.VersionTLS12}, sni: "old.test"},
		{name: "post-quantum key share", cfg: &tls.Config{ServerName: "post-quantum.example.test", NextProtos: []string{"h2", "http/1.1"}, CurvePreferences: []tls.CurveID{tls.X25519MLKEM768, tls.X25519}}, sni: "post-quantum.example.test", alpn: []string{"h2", "http/1.1"}, min: 1501},
		{name: "ech outer name", cfg: &tls.Config{ServerName: "secret.test", MinVersion: tls.VersionTLS13, EncryptedClientHelloConfigList: echConfigList(t, "public.test"), NextProtos: []string{"h2"}}, sni: "public.test", alpn: []string{"h2"}, ech: true},
	}
}

func checkHello(t *testing.T, what string, h ClientHello, err error, c helloCase) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: ParseClientHello: %v", what, err)
	}
	if string(h.ServerName()) != c.sni || !slices.Equal(h.ALPN(), c.alpn) || h.ECH != c.ech {
		t.Fatalf("%s: got SNI %q ALPN %q ECH %t; want %q %q %t", what, h.ServerName(), h.ALPN(), h.ECH, c.sni, c.alpn, c.ech)
	}
	for _, p := range c.alpn {
		if !h.HasALPN(p) {
			t.Fatalf("%s: HasALPN(%q) = false", what, p)
		}
	}
	if h.HasALPN("h3") {
		t.Fatalf("%s: HasALPN(h3) = true", what)
	}
}

// TestClientHelloOracle parses ClientHellos of a real crypto/tls client and compares with
// what the client was told and with what a crypto/tls server reads from the same bytes.
func TestClientHelloOracle(t *testing.T) {
	for _, c := range helloCases(t) {
		t.Run(c.name, func(t *testing.T) {
			rec := captureClientHello(t, c.cfg)
			if len(rec) < c.min {
				t.Fatalf("ClientHello is %d bytes, want at least %d", len(rec), c.min)
			}
			h, err := ParseClientHello(rec)
			checkHello(t, "as sent", h, err, c)
			seen := serverSees(t, rec)
			if seen == nil {
				t.Fatal("crypto/tls server did not read the ClientHello")
			}
			if string(h.ServerName()) != seen.ServerName || !slices.Equal(h.ALPN(), seen.SupportedProtos) {
				t.Fatalf("crypto/tls server sees SNI %q ALPN %q; ParseClientHello %q %q", seen.ServerName, seen.SupportedProtos, h.ServerName(), h.ALPN())
			}
			// Bytes after the ClientHello (early data, the next record) change nothing.
			h2, err := ParseClientHello(append(slices.Clone(rec), 0x17, 3, 3, 0, 1, 0))
			checkHello(t, "with bytes after it", h2, err, c)
		})
	}
}

// TestClientHelloSegments cuts a large ClientHello at every byte: every proper prefix needs
// more, the whole is parsed.
func TestClientHelloSegments(t *testing.T) {
	c := helloCases(t)[4]
	rec := captureClientHello(t, c.cfg)
	for i := range len(rec) {
		if _, err := ParseClientHello(rec[:i]); err != ErrNeedMore {
			t.Fatalf("first %d of %d bytes: %v, want ErrNeedMore", i, len(rec), err)
		}
	}
	h, err := ParseClientHello(rec)
	checkHello(t, "whole", h, err, c)
}

// TestClientHelloRecords splits the handshake message into two records at every byte, and
// into many small records, checking each against crypto/tls's server, which reassembles
// handshake messages over records as RFC 8446 §5.1 allows.
func TestClientHelloRecords(t *testing.T) {
	cases := helloCases(t)
	for _, c := range []helloCase{cases[0], cases[4], cases[5]} {
		t.Run(c.name, func(t *testing.T) {
			rec := captureClientHello(t, c.cfg)
			n := len(rec) - 5
			for cut := 1; cut < n; cut++ {
				b := fragment(t, rec, cut)
				h, err := ParseClientHello(b)
				checkHello(t, "cut at "+strconv.Itoa(cut), h, err, c)
				if cut%97 == 1 { // a sample: a server per cut would be slow
					if seen := serverSees(t, b); seen == nil || seen.ServerName != c.sni {
						t.Fatalf("cut at %d: crypto/tls server sees %+v", cut, seen)
					}
				}
			}
			for _, size := range []int{1, 3, 64, 500} {
				var cuts []int
				for i := size; i < n; i += size {
					cuts = append(cuts, i)
				}
				b := fragment(t, rec, cuts...)
				var resumed ClientHelloParser
				for i := range len(b) {
					if _, err := ParseClientHello(b[:i]); err != ErrNeedMore {
						t.Fatalf("records of %d, first %d of %d bytes: %v, want ErrNeedMore", size, i, len(b), err)
					}
					if _, err := resumed.Parse(b[:i]); err != ErrNeedMore {
						t.Fatalf("records of %d, resumed at %d of %d bytes: %v, want ErrNeedMore", size, i, len(b), err)
					}
				}
				h, err := resumed.Parse(b)
				checkHello(t, "resumed, records of "+strconv.Itoa(size), h, err, c)
				h, err = resumed.Parse(append(b[:len(b):len(b)], 0x17))
				checkHello(t, "resumed again, records of "+strconv.Itoa(size), h, err, c)
				h, err = ParseClientHello(b)
				checkHello(t, "records of "+strconv.Itoa(size), h, err, c)
				if seen := serverSees(t, b); seen == nil || seen.ServerName != c.sni {
					t.Fatalf("records of %d: crypto/tls server sees %+v", size, seen)
				}
			}
		})
	}
}

// TestClientHelloBad checks that broken records are refused at once, not waited on.
func TestClientHelloBad(t *testing.T) {
	good := captureClientHello(t, &tls.Config{ServerName: "a.test", NextProtos: []string{"h2"}})
	mod := func(f func(b []byte) []byte) []byte { return f(slices.Clone(good)) }
	cases := []struct {
		name string
		b    []byte
	}{
		{"not a handshake record", []byte{0x17, 3, 1, 0, 5}},
		{"record version 2", []byte{0x16, 2}},
		{"record version 3.5", []byte{0x16, 3, 5}},
		{"empty record", []byte{0x16, 3, 1, 0, 0}},
		{"oversized record", []byte{0x16, 3, 1, 0x48, 1}},
		{"server hello", []byte{0x16, 3, 1, 0, 4, 2}},
		{"hello too short", []byte{0x16, 3, 1, 0, 8, 1, 0, 0, 4, 3, 3, 0, 0}},
		{"second record not handshake", mod(func(b []byte) []byte { return append(fragment(t, b, 10)[:15], 0x15) })},
		{"extensions longer than the hello", mod(func(b []byte) []byte {
			// the message length shrinks by one: the extension list overruns it
			n := int(b[6])<<16 | int(b[7])<<8 | int(b[8]) - 1
			b[6], b[7], b[8] = byte(n>>16), byte(n>>8), byte(n)
			return b
		})},
		{"two host names", helloWith(extServerName, []byte{0, 10, 0, 0, 2, 'a', 'b', 0, 0, 2, 'c', 'd'})},
		{"trailing dot", helloWith(extServerName, []byte{0, 5, 0, 0, 2, 'a', '.'})},
		{"empty alpn protocol", helloWith(extALPN, []byte{0, 3, 2, 'h', '2', 0})},
	}
	for _, c := range cases {
		if _, err := ParseClientHello(c.b); err != ErrBadClientHello {
			t.Errorf("%s: %v, want ErrBadClientHello", c.name, err)
		}
	}
}

// helloWith is a minimal ClientHello, in one record, with one extension.
func helloWith(typ uint16, data []byte) []byte {
	body := append([]byte{3, 3}, make([]byte, 32)...)
	body = append(body, 0, 0, 2, 0x13, 0x01, 1, 0) // no session id, one suite, null compression
	ext := binary.BigEndian.AppendUint16(nil, typ)
	ext = binary.BigEndian.AppendUint16(ext, uint16(len(data)))
	ext = append(ext, data...)
	body = binary.BigEndian.AppendUint16(body, uint16(len(ext)))
	body = append(body, ext...)
	msg := append([]byte{handshakeClientHello, 0, byte(len(body) >> 8), byte(len(body))}, body...)
	return append([]byte{recordHandshake, 3, 1, byte(len(msg) >> 8), byte(len(msg))}, msg...)
}

func TestClientHelloMinimal(t *testing.T) {
	h, err := ParseClientHello(helloWith(extALPN, []byte{0, 3, 2, 'h', '2'}))
	if err != nil || !h.HasALPN("h2") || h.ServerName() != nil {
		t.Fatalf("got %q %q %v", h.ServerName(), h.ALPN(), err)
	}
	if !bytes.Equal(fragment(t, helloWith(0, []byte{0, 4, 0, 0, 1, 'x'}), 3)[:5], []byte{0x16, 3, 1, 0, 3}) {
		t.Fatal("fragment does not cut")
	}
}

func BenchmarkParseClientHello(b *testing.B) {
	for _, c := range []struct {
		name string
		cfg  *tls.Config
	}{
		{"typical", &tls.Config{ServerName: "www.example.com", NextProtos: []string{"h2", "http/1.1"}}},
		{"post-quantum", &tls.Config{ServerName: "www.example.com", NextProtos: []string{"h2", "http/1.1"}, CurvePreferences: []tls.CurveID{tls.X25519MLKEM768}}},
	} {
		rec := captureClientHello(b, c.cfg)
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(len(rec)))
			b.ReportAllocs()
			for b.Loop() {
				if h, err := ParseClientHello(rec); err != nil || h.nameLen == 0 {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestClientHelloMutations holds ParseClientHello to crypto/tls on damaged real
// ClientHellos (bytes changed, cut short, split into records): whenever a crypto/tls server
// reads a ClientHello from the bytes, ParseClientHello reads the same server name and ALPN.
// (The fuzz target checks invariants only: a crypto/tls server per input stalls the fuzzer.)
func TestClientHelloMutations(t *testing.T) {
	rng := mrand.New(mrand.NewPCG(1, 2))
	cases := helloCases(t)
	agreed := 0
	for i := range 1500 {
		c := cases[i%len(cases)]
		b := captureClientHello(t, c.cfg)
		switch i % 3 {
		case 0:
			b[rng.IntN(len(b))] = byte(rng.IntN(256))
		case 1:
			b = b[:rng.IntN(len(b)+1)]
		case 2:
			b = fragment(t, b, rng.IntN(len(b)), rng.IntN(len(b)))
			b[rng.IntN(len(b))] ^= byte(1 << rng.IntN(8))
		}
		h, err := ParseClientHello(b)
		seen := serverSees(t, b)
		if seen == nil || !recordVersionsSSL3to13(b) {
			continue
		}
		if err != nil || string(h.ServerName()) != seen.ServerName || !slices.Equal(h.ALPN(), seen.SupportedProtos) {
			t.Fatalf("%x:\ncrypto/tls sees SNI %q ALPN %q; ParseClientHello %q %q %v", b, seen.ServerName, seen.SupportedProtos, h.ServerName(), h.ALPN(), err)
		}
		agreed++
	}
	if agreed < 300 {
		t.Fatalf("crypto/tls read only %d of the damaged ClientHellos: the mutations are too harsh to test anything", agreed)
	}
}

// recordVersionsSSL3to13 reports whether every record header in b says version 3.0 to 3.4,
// which ParseClientHello (and the sniffer before it) requires; crypto/tls takes any
// version below 16.0 in its first records.
func recordVersionsSSL3to13(b []byte) bool {
	for len(b) >= 5 {
		if b[1] != 3 || b[2] > 4 {
			return false
		}
		b = b[min(len(b), 5+int(binary.BigEndian.Uint16(b[3:]))):]
	}
	return true
}

// BenchmarkClientHelloTrickle feeds a resumable parser a post-quantum ClientHello split
// into 3-byte records, in 100 reads: a slow or hostile client. It stays linear.
func BenchmarkClientHelloTrickle(b *testing.B) {
	rec := captureClientHello(b, &tls.Config{ServerName: "www.example.com", CurvePreferences: []tls.CurveID{tls.X25519MLKEM768}})
	var cuts []int
	for i := 3; i < len(rec)-5; i += 3 {
		cuts = append(cuts, i)
	}
	tiny := fragment(b, rec, cuts...)
	b.SetBytes(int64(len(tiny)))
	b.ReportAllocs()
	for b.Loop() {
		var p ClientHelloParser
		var err error
		for n := len(tiny) / 100; ; n += len(tiny) / 100 {
			if _, err = p.Parse(tiny[:min(n, len(tiny))]); err != ErrNeedMore {
				break
			}
		}
		if err != nil {
			b.Fatal(err)
		}
	}
}
