// Package redistest runs a real redis-server for tests: on a free loopback port, in the
// test's temp dir, without persistence, stopped when the test ends. Besides a lone server
// (Start), it starts a replica of one (StartReplica) and a Sentinel that monitors one
// (StartSentinel), for tests of failover.
package redistest

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"lb/internal/freeport"
)

// startDeadline bounds the wait for a started redis-server to answer PING.
const startDeadline = 5 * time.Second

// Server is a redis-server process of the test's own. Its methods fail the test on errors.
type Server struct {
	t       testing.TB
	bin     string
	port    int
	dir     string
	cmd     *exec.Cmd
	exited  chan struct{} // closed once cmd has been waited for
	stopped bool
	args    func(*Server) []string // redis-server's arguments, nil: serverArgs
}

// Start starts a redis-server for the test and stops it at the end of the test. It skips the
// test when redis-server is not installed, unless CI=true, where it fails.
func Start(t testing.TB) *Server {
	t.Helper()
	return start(t, nil)
}

// StartReplica starts a redis-server that replicates master (--replicaof), as Start does.
// It does not wait for the first sync: poll INFO replication (Reply) for that.
func StartReplica(t testing.TB, master *Server) *Server {
	t.Helper()
	return start(t, func(r *Server) []string {
		return append(r.serverArgs(), "--replicaof", "127.0.0.1", strconv.Itoa(master.port))
	})
}

// SentinelConfig is how a Sentinel watches its master.
type SentinelConfig struct {
	Master          string        // the name it monitors it under; default "m"
	DownAfter       time.Duration // down-after-milliseconds; default 500ms
	FailoverTimeout time.Duration // failover-timeout; default 2s
}

// StartSentinel starts a Redis Sentinel (redis-server CONF --sentinel) that monitors master
// with a quorum of 1, so that it fails over on its own. The Sentinel rewrites its config
// file in the test's temp dir.
func StartSentinel(t testing.TB, master *Server, cfg SentinelConfig) *Server {
	t.Helper()
	if cfg.Master == "" {
		cfg.Master = "m"
	}
	if cfg.DownAfter <= 0 {
		cfg.DownAfter = 500 * time.Millisecond
	}
	if cfg.FailoverTimeout <= 0 {
		cfg.FailoverTimeout = 2 * time.Second
	}
	return start(t, func(r *Server) []string {
		conf := filepath.Join(r.dir, "sentinel.conf")
		text := fmt.Sprintf("port %d\nbind 127.0.0.1\ndir %s\n"+
			"sentinel monitor %s 127.0.0.1 %d 1\n"+
			"sentinel down-after-milliseconds %s %d\n"+
			"sentinel failover-timeout %s %d\n",
			r.port, r.dir, cfg.Master, master.port, cfg.Master, cfg.DownAfter.Milliseconds(), cfg.Master, cfg.FailoverTimeout.Milliseconds())
		if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return []string{conf, "--sentinel"}
	})
}

// StartCluster starts a Redis Cluster of n masters (3 or more, no replicas), slots spread
// by redis-cli --cluster create, and waits until every node reports cluster_state:ok. Each
// node's bus listens on a free port of its own (cluster-port).
func StartCluster(t testing.TB, n int) []*Server {
	t.Helper()
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		t.Skipf("redis-cli not found on PATH: install it (apt-get install redis-tools) to run this test (%v)", err)
	}
	nodes := make([]*Server, n)
	create := []string{"--cluster", "create"}
	for i := range nodes {
		nodes[i] = start(t, func(r *Server) []string {
			return append(r.serverArgs(), "--cluster-enabled", "yes", "--cluster-port", strconv.Itoa(freeport.Get(t)),
				"--cluster-config-file", filepath.Join(r.dir, "nodes.conf"), "--cluster-node-timeout", "2000")
		})
		create = append(create, nodes[i].Addr())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, cli, append(create, "--cluster-yes")...).CombinedOutput()
	if err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, node := range nodes {
		for !strings.Contains(strings.Join(node.Reply("CLUSTER", "INFO"), ""), "cluster_state:ok") {
			if time.Now().After(deadline) {
				t.Fatalf("cluster node %s not ok after 10s: %q", node.Addr(), node.Reply("CLUSTER", "INFO"))
			}
			time.Sleep(20 * time.Millisecond) // poll interval
		}
	}
	return nodes
}

// start starts redis-server with the arguments args gives for r (r.port set), or those of
// a lone server.
func start(t testing.TB, args func(r *Server) []string) *Server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("redis-server not found and CI=true: install it (apt-get install redis-server): %v", err)
		}
		t.Skipf("redis-server not found on PATH: install it (apt-get install redis-server) to run this test (%v)", err)
	}
	r := &Server{t: t, bin: bin, dir: t.TempDir(), args: args}
	t.Cleanup(r.Stop)
	// A port found free can be taken before redis-server binds it: try a few.
	for range 3 {
		r.port = freeport.Get(t)
		if r.start() {
			return r
		}
	}
	t.Fatalf("redis-server did not start; its log:\n%s", r.Log())
	return nil
}

// start runs redis-server on r.port and reports whether it answers PING in time.
func (r *Server) start() bool {
	r.t.Helper()
	logf, err := os.OpenFile(filepath.Join(r.dir, "redis.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		r.t.Fatal(err)
	}
	defer logf.Close()
	args := r.serverArgs()
	if r.args != nil {
		args = r.args(r)
	}
	r.cmd = exec.Command(r.bin, args...)
	r.cmd.Stdout, r.cmd.Stderr = logf, logf
	// A test process killed before its cleanup (a timed-out mutant, a ^C) takes its
	// redis-server with it.
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := r.cmd.Start(); err != nil {
		r.t.Fatalf("start redis-server: %v", err)
	}
	r.exited, r.stopped = make(chan struct{}), false
	go waitExit(r.cmd, r.exited)
	deadline := time.Now().Add(startDeadline)
	for time.Now().Before(deadline) {
		select {
		case <-r.exited:
			return false // port taken, most likely
		default:
		}
		if r.ping() == nil {
			return true
		}
		time.Sleep(10 * time.Millisecond) // poll interval
	}
	r.Stop()
	return false
}

// serverArgs are the arguments of a lone redis-server on r.port.
func (r *Server) serverArgs() []string {
	// A master sends its first sync to a replica at once, not after 5 s waiting for more.
	return []string{"--port", strconv.Itoa(r.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", r.dir,
		"--repl-diskless-sync-delay", "0"}
}

func waitExit(cmd *exec.Cmd, exited chan struct{}) {
	cmd.Wait()
	close(exited)
}

// ping sends PING on a fresh connection and checks the answer.
func (r *Server) ping() error {
	c, err := net.DialTimeout("tcp", r.Addr(), time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if line != "+PONG\r\n" {
		return fmt.Errorf("PING answered %q", line)
	}
	return nil
}

// Stop kills redis-server and waits for it; safe to call when it is already stopped.
func (r *Server) Stop() {
	if r.cmd == nil || r.stopped {
		return
	}
	r.stopped = true
	r.cmd.Process.Signal(syscall.SIGCONT) // a stopped process dies only once continued
	r.cmd.Process.Kill()
	<-r.exited
}

// Restart starts redis-server again on the same port, empty.
func (r *Server) Restart() {
	r.t.Helper()
	r.Stop()
	if !r.start() {
		r.t.Fatalf("redis-server did not restart on port %d; its log:\n%s", r.port, r.Log())
	}
}

// Signal sends sig to redis-server: SIGSTOP freezes it, SIGCONT lets it go on.
func (r *Server) Signal(sig syscall.Signal) {
	r.t.Helper()
	if err := r.cmd.Process.Signal(sig); err != nil {
		r.t.Fatal(err)
	}
}

// Addr is the server's host:port on loopback.
func (r *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(r.port)) }

// URL is the server's redis:// URL, database 0.
func (r *Server) URL() string { return "redis://" + r.Addr() + "/0" }

// Log returns what redis-server has logged.
func (r *Server) Log() string {
	b, _ := os.ReadFile(filepath.Join(r.dir, "redis.log"))
	return string(b)
}

// Do sends one command on a fresh connection and returns the first line of the answer (the
// content, for a bulk string): a look at Redis that goes around the code under test.
func (r *Server) Do(args ...string) string {
	r.t.Helper()
	br, done := r.send(args)
	defer done()
	line, err := br.ReadString('\n')
	if err != nil {
		r.t.Fatal(err)
	}
	line = strings.TrimSuffix(line, "\r\n")
	if strings.HasPrefix(line, "$") && line != "$-1" { // a bulk string: return its content
		line, err = br.ReadString('\n')
		if err != nil {
			r.t.Fatal(err)
		}
		line = strings.TrimSuffix(line, "\r\n")
	}
	return line
}

// send writes one command on a fresh connection, bounded by a second, and returns the reader
// of its answer and what closes the connection.
func (r *Server) send(args []string) (*bufio.Reader, func()) {
	r.t.Helper()
	c, err := net.DialTimeout("tcp", r.Addr(), time.Second)
	if err != nil {
		r.t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(time.Second))
	cmd := fmt.Sprintf("*%d\r\n", len(args))
	for _, a := range args {
		cmd += fmt.Sprintf("$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := c.Write([]byte(cmd)); err != nil {
		c.Close()
		r.t.Fatal(err)
	}
	return bufio.NewReader(c), func() { c.Close() }
}

// Port is the server's port on loopback.
func (r *Server) Port() int { return r.port }

// Reply sends one command on a fresh connection and returns the whole answer, flattened: a
// bulk or simple string as one element, an array as its elements in order (nested arrays
// flattened too), an integer as its digits, a nil as no element. An error reply fails the
// test. It fails the test if the server does not answer within a second.
func (r *Server) Reply(args ...string) []string {
	r.t.Helper()
	br, done := r.send(args)
	defer done()
	out, err := readReply(br, nil)
	if err != nil {
		r.t.Fatalf("%s: %v", strings.Join(args, " "), err)
	}
	return out
}

// readReply appends the RESP2 reply on br to out.
func readReply(br *bufio.Reader, out []string) ([]string, error) {
	line, err := br.ReadString('\n')
	if err != nil {
		return out, err
	}
	line = strings.TrimSuffix(line, "\r\n")
	if line == "" {
		return out, fmt.Errorf("empty reply line")
	}
	switch kind, rest := line[0], line[1:]; kind {
	case '+', ':':
		return append(out, rest), nil
	case '-':
		return out, fmt.Errorf("error reply: %s", rest)
	case '$':
		n, err := strconv.Atoi(rest)
		if err != nil || n < 0 {
			return out, err // $-1: nil
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(br, buf); err != nil {
			return out, err
		}
		return append(out, string(buf[:n])), nil
	case '*':
		n, err := strconv.Atoi(rest)
		if err != nil {
			return out, err
		}
		for range n {
			if out, err = readReply(br, out); err != nil {
				return out, err
			}
		}
		return out, nil
	}
	return out, fmt.Errorf("unknown reply %q", line)
}

// SentinelSet is a master, one replica of it and a Sentinel that monitors the master as
// "m" with a quorum of 1: what a failover needs.
type SentinelSet struct {
	Master, Replica, Sentinel *Server
}

// StartSentinelSet starts a SentinelSet, Sentinel watching with cfg (its Master is "m"),
// and returns once the replica is in sync and the Sentinel knows it, so that it can fail
// over to it at once.
func StartSentinelSet(t testing.TB, cfg SentinelConfig) *SentinelSet {
	t.Helper()
	cfg.Master = "m"
	s := &SentinelSet{Master: Start(t)}
	s.Replica = StartReplica(t, s.Master)
	await(t, "the replica to sync", startDeadline, func() bool {
		return strings.Contains(strings.Join(s.Replica.Reply("INFO", "replication"), ""), "master_link_status:up")
	})
	s.Sentinel = StartSentinel(t, s.Master, cfg)
	await(t, "the Sentinel to find the replica", startDeadline, func() bool {
		fields := s.Sentinel.Reply("SENTINEL", "replicas", "m")
		i := slices.Index(fields, "flags")
		return i >= 0 && i+1 < len(fields) && fields[i+1] == "slave"
	})
	return s
}

// URL is the store URL of the set: redis+sentinel://SENTINEL/m/0.
func (s *SentinelSet) URL() string { return "redis+sentinel://" + s.Sentinel.Addr() + "/m/0" }

// MasterPort is the port the Sentinel names for the master now, 0 if it names none.
func (s *SentinelSet) MasterPort() int {
	addr := s.Sentinel.Reply("SENTINEL", "get-master-addr-by-name", "m")
	if len(addr) != 2 {
		return 0
	}
	port, _ := strconv.Atoi(addr[1])
	return port
}

// AwaitPromotion waits, up to within, until the Sentinel names the replica as the master.
func (s *SentinelSet) AwaitPromotion(within time.Duration) {
	s.Sentinel.t.Helper()
	await(s.Sentinel.t, "Sentinel to promote the replica", within, func() bool { return s.MasterPort() == s.Replica.port })
}

// await polls cond until it holds, failing the test after within.
func await(t testing.TB, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("still waiting after %v for %s", within, what)
		}
		time.Sleep(20 * time.Millisecond) // poll interval
	}
}
