// Command upgrade measures an in-place upgrade of lb holding many connections: how long
// from SIGUSR2 until the old process has exited, how many connections moved and how fast,
// and whether every held connection still answers afterwards.
//
//	go run ./bench/upgrade -conns 9000
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"lb/internal/procstat"
)

var (
	conns = flag.Int("conns", 9000, "connections held through lb during the upgrade (each costs 2 descriptors here and 2 in lb)")
	lbBin = flag.String("lb", "", "lb binary (default: go build lb/cmd/lb)")
)

func main() {
	flag.Parse()
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "upgrade:", err)
		os.Exit(1)
	}
}

// greeting is what each client sends, once before the upgrade and once after: a request
// head, so that lb routes it at once, echoed back whole by the backend.
const greeting = "GET / HTTP/1.1\r\nHost: bench\r\n\r\n"

func run() error {
	dir, err := os.MkdirTemp("", "lb-upgrade-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	bin := *lbBin
	if bin == "" {
		bin = filepath.Join(dir, "lb")
		if out, err := exec.Command("go", "build", "-o", bin, "lb/cmd/lb").CombinedOutput(); err != nil {
			return fmt.Errorf("go build: %v\n%s", err, out)
		}
	}
	backend, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer backend.Close()
	go serveEcho(backend)
	servers := filepath.Join(dir, "servers.txt")
	if err := os.WriteFile(servers, []byte(backend.Addr().String()+"\n"), 0o644); err != nil {
		return err
	}
	probe, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	addr := probe.Addr().String()
	probe.Close()
	pidFile, logFile := filepath.Join(dir, "lb.pid"), filepath.Join(dir, "lb.log")
	logf, err := os.Create(logFile)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(bin, "serve", "-f", servers, "--listen", addr, "--pid-file", pidFile, "--log-format", "json", "--drain-timeout", "1m")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return err
	}
	go cmd.Wait()
	defer func() {
		if pid := readPID(pidFile); pid > 0 {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		cmd.Process.Kill()
	}()
	if !waitUntil(10*time.Second, func() bool { return readPID(pidFile) == cmd.Process.Pid }) {
		return errors.New("lb did not start")
	}
	held := make([]net.Conn, 0, *conns)
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	for range *conns {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return fmt.Errorf("connection %d: %w", len(held)+1, err)
		}
		held = append(held, c)
		if err := roundTrip(c); err != nil {
			return fmt.Errorf("connection %d before the upgrade: %w", len(held), err)
		}
	}
	old := cmd.Process.Pid
	start := time.Now()
	syscall.Kill(old, syscall.SIGUSR2)
	if !waitUntil(time.Minute, func() bool { p := readPID(pidFile); return p != old && p != 0 && !procstat.Running(old) }) {
		return errors.New("the old process has not exited within a minute")
	}
	gone := time.Since(start)
	failed := 0
	for _, c := range held {
		if roundTrip(c) != nil {
			failed++
		}
	}
	h := handedOver(logFile)
	fmt.Printf("| held | SIGUSR2 to old exit | hand-over | moved | drained in old | moved/s | answered after |\n")
	fmt.Printf("|---|---|---|---|---|---|---|\n")
	fmt.Printf("| %d | %v | %v | %d | %d | %.0f | %d of %d |\n", *conns, gone.Round(time.Millisecond), h.took.Round(time.Millisecond),
		h.moved, h.kept, float64(h.moved)/h.took.Seconds(), len(held)-failed, len(held))
	return nil
}

// roundTrip sends the greeting and reads it back.
func roundTrip(c net.Conn) error {
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, greeting); err != nil {
		return err
	}
	got := make([]byte, len(greeting))
	if _, err := io.ReadFull(c, got); err != nil {
		return err
	}
	if string(got) != greeting {
		return fmt.Errorf("echo %q", got)
	}
	return nil
}

func serveEcho(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			// Not io.Copy: between two TCP sockets it splices, through a pipe of two
			// descriptors held for the connection's life.
			buf := make([]byte, 512)
			for {
				n, err := c.Read(buf)
				if err != nil {
					return
				}
				if _, err := c.Write(buf[:n]); err != nil {
					return
				}
			}
		}()
	}
}

type handover struct {
	moved, kept int
	took        time.Duration
}

// handedOver reads the old process's "connections handed over" line.
func handedOver(logFile string) handover {
	var h handover
	f, err := os.Open(logFile)
	if err != nil {
		return h
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var e struct {
			Message string  `json:"message"`
			Moved   int     `json:"moved"`
			Kept    int     `json:"drain_here"`
			Took    float64 `json:"took"` // zerolog's default: milliseconds
		}
		if json.Unmarshal(sc.Bytes(), &e) == nil && e.Message == "connections handed over" {
			h = handover{moved: e.Moved, kept: e.Kept, took: time.Duration(e.Took * float64(time.Millisecond))}
		}
	}
	return h
}

func readPID(path string) int {
	b, _ := os.ReadFile(path)
	pid, _ := strconv.Atoi(string(bytes.TrimSpace(b)))
	return pid
}

func waitUntil(within time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}
