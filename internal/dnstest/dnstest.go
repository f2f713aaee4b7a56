// Package dnstest runs a real DNS server on loopback (github.com/miekg/dns, UDP and TCP on
// one port) whose answers a test sets and changes while lb queries it.
package dnstest

import (
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/miekg/dns"
)

// SRV is one SRV record of an answer.
type SRV struct {
	Target   string // a name the server also answers A/AAAA for
	Port     uint16
	Priority uint16
	Weight   uint16
}

// Server answers A, AAAA and SRV queries from the records set with SetA and SetSRV; any
// other name gets NXDOMAIN, and a name set to fail gets SERVFAIL. Safe for concurrent use.
type Server struct {
	Addr    string // host:port of both the UDP and the TCP listener
	queries atomic.Int64

	mu   sync.Mutex
	a    map[string][]netip.Addr
	srv  map[string][]SRV
	fail map[string]bool
}

// Start runs a server on 127.0.0.1 at a free port, stopped when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	s := &Server{a: map[string][]netip.Addr{}, srv: map[string][]SRV{}, fail: map[string]bool{}}
	// UDP and TCP on one port: the UDP port the kernel picks may be taken for TCP, so try a few.
	var pc net.PacketConn
	var ln net.Listener
	var err error
	for range 20 {
		if pc, err = net.ListenPacket("udp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		if ln, err = net.Listen("tcp", pc.LocalAddr().String()); err == nil {
			break
		}
		pc.Close()
	}
	if err != nil {
		t.Fatalf("no port free for both UDP and TCP: %v", err)
	}
	s.Addr = pc.LocalAddr().String()
	udp := &dns.Server{PacketConn: pc, Handler: s}
	tcp := &dns.Server{Listener: ln, Handler: s}
	var wg sync.WaitGroup
	wg.Go(func() { udp.ActivateAndServe() })
	wg.Go(func() { tcp.ActivateAndServe() })
	t.Cleanup(func() {
		udp.Shutdown()
		tcp.Shutdown()
		wg.Wait()
	})
	return s
}

// SetA makes name answer with these addresses (A for IPv4, AAAA for IPv6); none: NXDOMAIN.
func (s *Server) SetA(name string, addrs ...string) {
	ips := make([]netip.Addr, len(addrs))
	for i, a := range addrs {
		ips[i] = netip.MustParseAddr(a)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.a[fqdn(name)] = ips
}

// SetSRV makes name answer with these SRV records; none: NXDOMAIN.
func (s *Server) SetSRV(name string, records ...SRV) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.srv[fqdn(name)] = records
}

// Fail makes every query of name answer SERVFAIL (on) or its records again (off).
func (s *Server) Fail(name string, on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fail[fqdn(name)] = on
}

// Queries is how many queries the server has answered.
func (s *Server) Queries() int64 { return s.queries.Load() }

// ServeDNS answers one query.
func (s *Server) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	s.queries.Add(1)
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	if len(req.Question) == 1 {
		q := req.Question[0]
		name := strings.ToLower(q.Name)
		s.mu.Lock()
		switch {
		case s.fail[name]:
			m.Rcode = dns.RcodeServerFailure
		case s.a[name] == nil && s.srv[name] == nil:
			m.Rcode = dns.RcodeNameError
		case q.Qtype == dns.TypeA || q.Qtype == dns.TypeAAAA:
			for _, ip := range s.a[name] {
				hdr := dns.RR_Header{Name: q.Name, Class: dns.ClassINET, Ttl: 1}
				switch {
				case ip.Is4() && q.Qtype == dns.TypeA:
					hdr.Rrtype = dns.TypeA
					m.Answer = append(m.Answer, &dns.A{Hdr: hdr, A: ip.AsSlice()})
				case ip.Is6() && q.Qtype == dns.TypeAAAA:
					hdr.Rrtype = dns.TypeAAAA
					m.Answer = append(m.Answer, &dns.AAAA{Hdr: hdr, AAAA: ip.AsSlice()})
				}
			}
		case q.Qtype == dns.TypeSRV:
			for _, r := range s.srv[name] {
				hdr := dns.RR_Header{Name: q.Name, Rrtype: dns.TypeSRV, Class: dns.ClassINET, Ttl: 1}
				m.Answer = append(m.Answer, &dns.SRV{Hdr: hdr, Target: fqdn(r.Target), Port: r.Port, Priority: r.Priority, Weight: r.Weight})
			}
		}
		s.mu.Unlock()
	}
	w.WriteMsg(m)
}

func fqdn(name string) string { return dns.Fqdn(strings.ToLower(name)) }
