// Command bench measures lb beside HAProxy (mode tcp) and nginx stream, all round robin
// over the same two nginx backends on loopback, in one run, scenarios interleaved, median of
// -rounds. It prints a Markdown table with each system's ratio to HAProxy.
//
//	go run ./bench                       # needs wrk, haproxy, nginx (+ libnginx-mod-stream)
//	go run ./bench -hold 9000 -rounds 3  # the figures in docs/benchmarks.md
//	go run ./bench -rate 15000 -syscalls # also latency at a fixed rate, system calls per request
package main

import (
	"bufio"
	"bytes"
	"cmp"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/template"
	"time"
)

var (
	rounds    = flag.Int("rounds", 3, "runs of each scenario per system; the median counts")
	dur       = flag.Duration("dur", 4*time.Second, "length of each wrk run")
	hold      = flag.Int("hold", 2500, "connections to open and hold through each proxy (0: skip)")
	scenes    = flag.String("scenarios", "keepalive,close,bulk", "which wrk scenarios, comma-separated")
	systems   = flag.String("systems", "haproxy,nginx,lb", "which proxies, comma-separated (direct is the backend itself)")
	lbArgs    = flag.String("lb-args", "", "extra flags for lb serve")
	variants  = variantFlag{}
	lbBin     = flag.String("lb", "", "lb binary (default: built from ./cmd/lb)")
	cpu       = flag.Bool("cpu", false, "also measure where the CPU goes per request (keepalive and close), the ceiling it sets, and what the bare system calls cost")
	rate      = flag.Float64("rate", 0, "also offer this many requests a second, open loop, for -dur after a 1 s warm-up, and measure latency from each request's scheduled send time and the proxy's CPU per request (0: skip)")
	rateConns = flag.Int("rate-conns", 50, "keep-alive connections the -rate load is spread over")
	syscalls  = flag.Bool("syscalls", false, "also count the proxy's system calls per request with perf while ab -k -c 50 -n 20000 runs through it")
)

const confTemplate = `
{{define "backends"}}worker_processes 1;
daemon off;
pid {{.Dir}}/backends.pid;
error_log {{.Dir}}/backends.err warn;
worker_rlimit_nofile 20000;
events { worker_connections 19000; }
http {
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 120s;
  client_body_temp_path {{.Dir}}/body; proxy_temp_path {{.Dir}}/proxy; fastcgi_temp_path {{.Dir}}/fcgi;
  uwsgi_temp_path {{.Dir}}/uwsgi; scgi_temp_path {{.Dir}}/scgi;
  server { listen 127.0.0.1:{{.B1}} backlog=4096 reuseport; root {{.Dir}}/www; location = / { return 200 "backend-1\n"; } }
  server { listen 127.0.0.1:{{.B2}} backlog=4096 reuseport; root {{.Dir}}/www; location = / { return 200 "backend-2\n"; } }
  # The same, behind PROXY protocol: for lb variants with --send-proxy.
  server { listen 127.0.0.1:{{.PB1}} backlog=4096 reuseport proxy_protocol; root {{.Dir}}/www; location = / { return 200 "backend-1\n"; } }
  server { listen 127.0.0.1:{{.PB2}} backlog=4096 reuseport proxy_protocol; root {{.Dir}}/www; location = / { return 200 "backend-2\n"; } }
}
{{end}}
{{define "stream"}}load_module /usr/lib/nginx/modules/ngx_stream_module.so;
worker_processes auto;
daemon off;
pid {{.Dir}}/stream.pid;
error_log {{.Dir}}/stream.err warn;
worker_rlimit_nofile 20000;
events { worker_connections 19000; }
stream {
  upstream be { server 127.0.0.1:{{.B1}}; server 127.0.0.1:{{.B2}}; }
  server { listen 127.0.0.1:{{.Port}} backlog=4096; proxy_pass be; }
}
{{end}}
{{define "haproxy"}}global
  maxconn 9500
defaults
  mode tcp
  timeout connect 5s
  timeout client 120s
  timeout server 120s
frontend fe
  bind 127.0.0.1:{{.Port}} backlog 4096
  default_backend be
backend be
  balance roundrobin
  server b1 127.0.0.1:{{.B1}}
  server b2 127.0.0.1:{{.B2}}
{{end}}`

type confData struct {
	Dir          string
	B1, B2, Port int
	PB1, PB2     int // the backends' PROXY protocol ports
}

// system is one thing measured: a proxy process (or the backend itself) on a port.
type system struct {
	name string
	port int
	cmd  *exec.Cmd
}

// variantFlag collects -variant NAME=FLAGS: one more lb, measured as system NAME.
type variantFlag map[string]string

func (v variantFlag) String() string { return fmt.Sprint(map[string]string(v)) }

func (v variantFlag) Set(s string) error {
	name, args, ok := strings.Cut(s, "=")
	if !ok || !strings.HasPrefix(name, "lb-") {
		return fmt.Errorf("want lb-NAME=FLAGS, e.g. lb-sticky=--sticky-cookie=lb_srv")
	}
	v[name] = args
	return nil
}

func main() {
	flag.Var(variants, "variant", "`lb-NAME=FLAGS`: also measure lb started with FLAGS, as system lb-NAME (add it to -systems); repeatable; FLAGS may start with bin=PATH for another build of lb")
	flag.Parse()
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run() error {
	for _, tool := range []string{"wrk", "nginx", "haproxy"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s not found: apt-get install -y wrk haproxy nginx libnginx-mod-stream", tool)
		}
	}
	if *syscalls {
		for _, tool := range []string{"perf", "ab"} {
			if _, err := exec.LookPath(tool); err != nil {
				return fmt.Errorf("-syscalls needs %s: apt-get install -y linux-perf apache2-utils", tool)
			}
		}
	}
	dir, err := os.MkdirTemp("", "lb-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o755) // nginx's workers run as another user and serve files from it
	for _, d := range []string{"www", "body", "proxy", "fcgi", "uwsgi", "scgi"} {
		os.Mkdir(filepath.Join(dir, d), 0o755)
	}
	big := make([]byte, 1<<20)
	for i := range big {
		big[i] = byte(i * 7)
	}
	if err := os.WriteFile(filepath.Join(dir, "www", "big"), big, 0o644); err != nil {
		return err
	}
	tmpl := template.Must(template.New("").Parse(confTemplate))
	names := strings.Split(*systems, ",")
	ports := freePorts(4 + len(names))
	data := confData{Dir: dir, B1: ports[0], B2: ports[1], PB1: ports[2], PB2: ports[3]}
	ports = append(ports[:2], ports[4:]...)

	var running []*system
	defer func() {
		for _, s := range running {
			stop(s.cmd)
		}
	}()
	start := func(name string, port int, args ...string) error {
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Stdout, cmd.Stderr = io.Discard, os.Stderr
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		running = append(running, &system{name: name, port: port, cmd: cmd})
		return waitPort(port)
	}
	write := func(name string, d confData) (string, error) {
		path := filepath.Join(dir, name+".conf")
		f, err := os.Create(path)
		if err != nil {
			return "", err
		}
		defer f.Close()
		return path, tmpl.ExecuteTemplate(f, name, d)
	}

	conf, err := write("backends", data)
	if err == nil {
		err = start("backends", data.B1, "nginx", "-c", conf)
	}
	if err != nil {
		return err
	}
	backends := running[0]
	var measured []*system
	for i, name := range names {
		d := data
		d.Port = ports[2+i]
		switch name {
		case "direct":
			measured = append(measured, &system{name: "direct", port: data.B1})
			continue
		case "haproxy":
			conf, err = write("haproxy", d)
			if err == nil {
				err = start(name, d.Port, "haproxy", "-db", "-f", conf)
			}
		case "nginx":
			conf, err = write("stream", d)
			if err == nil {
				err = start(name, d.Port, "nginx", "-c", conf)
			}
		case "lb":
			err = startLB(dir, name, d, *lbArgs, start)
		default:
			if args, ok := variants[name]; ok {
				err = startLB(dir, name, d, args, start)
				break
			}
			err = fmt.Errorf("unknown system %q", name)
		}
		if err != nil {
			return err
		}
		measured = append(measured, running[len(running)-1])
	}

	results := map[string]map[string]float64{}
	costs := map[string]map[string]cpuCost{}
	for _, s := range measured {
		results[s.name] = map[string]float64{}
		costs[s.name] = map[string]cpuCost{}
	}
	for _, sc := range strings.Split(*scenes, ",") {
		if !slices.Contains([]string{"keepalive", "close", "bulk"}, sc) {
			return fmt.Errorf("unknown scenario %q", sc)
		}
		runs := map[string][]wrkRun{}
		for range *rounds {
			for _, s := range measured {
				r, err := runWrk(sc, s, backends)
				if err != nil {
					return fmt.Errorf("%s %s: %w", s.name, sc, err)
				}
				runs[s.name] = append(runs[s.name], r)
			}
		}
		for _, s := range measured {
			m := median(runs[s.name])
			results[s.name][sc] = m.value
			if *cpu && sc != "bulk" {
				costs[s.name][sc] = m.cpu
				if s.cmd != nil {
					results[s.name][sc+" cpu"] = m.cpu.proxy
				}
			}
		}
	}
	if *rate > 0 {
		if err := measureRate(measured, results); err != nil {
			return err
		}
	}
	if *syscalls {
		if err := measureSyscalls(measured, results); err != nil {
			return err
		}
	}
	for _, s := range measured {
		if s.cmd == nil || *hold == 0 {
			continue
		}
		held, rss, fds := measureHeld(s, *hold)
		results[s.name]["held"] = float64(held)
		if held > 0 {
			results[s.name]["B/conn"] = float64(rss) / float64(held)
			results[s.name]["fds/conn"] = float64(fds) / float64(held)
		}
		if sniffing, rss, _ := measureSniffing(s, *hold); sniffing > 0 {
			results[s.name]["B/sniffing"] = float64(rss) / float64(sniffing)
		}
	}
	printTable(measured, results)
	if *cpu {
		perRequest, perConn, err := bareCosts(100, 2000)
		if err != nil {
			return err
		}
		printCPU(measured, costs, results, map[string]float64{"keepalive": perRequest, "close": perConn})
	}
	return nil
}

// measureRate runs the fixed-rate load -rounds times on each system, interleaved, and
// keeps the median of each figure.
func measureRate(measured []*system, results map[string]map[string]float64) error {
	runs := map[string][]rateRun{}
	for range *rounds {
		for _, s := range measured {
			r, err := runRate(s, *rate, *rateConns, *dur)
			if err != nil {
				return fmt.Errorf("%s at %.0f r/s: %w", s.name, *rate, err)
			}
			runs[s.name] = append(runs[s.name], r)
		}
	}
	for _, s := range measured {
		r := runs[s.name]
		res := results[s.name]
		res["rate r/s"] = medianOf(r, func(r rateRun) float64 { return r.achieved })
		res["rate mean"] = medianOf(r, func(r rateRun) float64 { return float64(r.mean) / 1e3 })
		res["rate p99"] = medianOf(r, func(r rateRun) float64 { return float64(r.p99) / 1e3 })
		if s.cmd != nil {
			res["rate cpu"] = medianOf(r, func(r rateRun) float64 { return r.cpu })
		}
	}
	return nil
}

// measureSyscalls counts each proxy's system calls per request -rounds times, interleaved,
// and keeps the median.
func measureSyscalls(measured []*system, results map[string]map[string]float64) error {
	runs := map[string][]float64{}
	for range *rounds {
		for _, s := range measured {
			if s.cmd == nil {
				continue
			}
			n, err := syscallsPerRequest(s)
			if err != nil {
				return fmt.Errorf("%s system calls: %w", s.name, err)
			}
			runs[s.name] = append(runs[s.name], n)
		}
	}
	for name, r := range runs {
		results[name]["syscalls"] = medianOf(r, func(n float64) float64 { return n })
	}
	return nil
}

// medianOf is the median of the figures f reads from runs.
func medianOf[T any](runs []T, f func(T) float64) float64 {
	v := make([]float64, len(runs))
	for i, r := range runs {
		v[i] = f(r)
	}
	slices.Sort(v)
	return v[len(v)/2]
}

func startLB(dir, name string, d confData, lbArgs string, start func(string, int, ...string) error) error {
	bin := *lbBin
	if bin == "" {
		bin = filepath.Join(dir, "lb")
	}
	if other, rest, ok := strings.Cut(lbArgs, "bin="); ok && strings.TrimSpace(other) == "" {
		// Another build of lb, e.g. the one before a change: bin=PATH [FLAGS].
		bin, lbArgs, _ = strings.Cut(rest, " ")
	}
	if _, err := os.Stat(bin); err != nil {
		build := exec.Command("go", "build", "-o", bin, "./cmd/lb")
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			return fmt.Errorf("building lb (run from the repository root): %w", err)
		}
	}
	servers := filepath.Join(dir, name+".servers.txt")
	b1, b2 := d.B1, d.B2
	if strings.Contains(lbArgs, "--send-proxy") {
		b1, b2 = d.PB1, d.PB2
	}
	if err := os.WriteFile(servers, fmt.Appendf(nil, "127.0.0.1:%d\n127.0.0.1:%d\n", b1, b2), 0o644); err != nil {
		return err
	}
	// A long sniff timeout holds the partial heads of measureSniffing while it measures.
	args := []string{bin, "serve", "-f", servers, "--listen", fmt.Sprintf("127.0.0.1:%d", d.Port), "--log-level", "warn", "--sniff-timeout", "30s"}
	if n, rest, ok := strings.Cut(lbArgs, "routes="); ok && strings.TrimSpace(n) == "" {
		// routes=N [FLAGS]: a config file of N host routes, the request matching the last.
		count, flags, _ := strings.Cut(rest, " ")
		conf, err := routesConfig(dir, name, d, b1, b2, count)
		if err != nil {
			return err
		}
		args, lbArgs = []string{bin, "serve", "--config", conf, "--log-level", "warn", "--sniff-timeout", "30s"}, flags
	}
	return start(name, d.Port, append(args, strings.Fields(lbArgs)...)...)
}

// routesConfig writes an lb.yaml whose listener has n host routes to one pool: n-1 names
// no request has, then 127.0.0.1, the Host wrk sends.
func routesConfig(dir, name string, d confData, b1, b2 int, n string) (string, error) {
	count, err := strconv.Atoi(n)
	if err != nil || count < 1 {
		return "", fmt.Errorf("routes=%s: want a number of routes, 1 or more", n)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "listeners:\n  - listen: 127.0.0.1:%d\n    routes:\n", d.Port)
	for i := 1; i < count; i++ {
		fmt.Fprintf(&b, "      - match: {host: h%d.test}\n        pool: web\n", i)
	}
	fmt.Fprintf(&b, "      - match: {host: 127.0.0.1}\n        pool: web\npools:\n  web: {servers: [127.0.0.1:%d, 127.0.0.1:%d]}\n", b1, b2)
	conf := filepath.Join(dir, name+".yaml")
	return conf, os.WriteFile(conf, []byte(b.String()), 0o644)
}

var (
	reqPerSec = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	xferSec   = regexp.MustCompile(`Transfer/sec:\s+([0-9.]+)([KMG]?B)`)
)

// wrkRun is one wrk run's requests per second (MB/s for bulk), and with -cpu where the CPU
// went meanwhile.
type wrkRun struct {
	value float64
	cpu   cpuCost
}

// median is the run with the median value; its CPU figures come from that same run.
func median(runs []wrkRun) wrkRun {
	s := slices.Clone(runs)
	slices.SortFunc(s, func(a, b wrkRun) int { return cmp.Compare(a.value, b.value) })
	return s[len(s)/2]
}

// runWrk runs one scenario against s. With -cpu it reads the CPU of s, the backends and wrk
// over the middle three quarters of the run, away from its start and end.
func runWrk(scenario string, s, backends *system) (wrkRun, error) {
	url := fmt.Sprintf("http://127.0.0.1:%d/", s.port)
	args := []string{"-t1", "-c50", "-d" + strconv.Itoa(int(dur.Seconds())) + "s"}
	switch scenario {
	case "close":
		args = append(args, "-H", "Connection: close")
	case "bulk":
		args = []string{"-t1", "-c8", args[2]}
		url += "big"
	}
	var buf bytes.Buffer
	w := exec.Command("wrk", append(args, url)...)
	w.Stdout, w.Stderr = &buf, &buf
	if err := w.Start(); err != nil {
		return wrkRun{}, fmt.Errorf("wrk: %w", err)
	}
	var before, after cpuSample
	window := *dur * 3 / 4
	if *cpu && scenario != "bulk" {
		var proxy []int
		if s.cmd != nil {
			proxy = processTree(s.cmd.Process.Pid)
		}
		bk := processTree(backends.cmd.Process.Pid)
		time.Sleep(*dur / 8)
		before = readCPU(proxy, bk, w.Process.Pid)
		time.Sleep(window)
		after = readCPU(proxy, bk, w.Process.Pid)
	}
	err := w.Wait()
	out := buf.Bytes()
	if err != nil {
		return wrkRun{}, fmt.Errorf("wrk: %w: %s", err, out)
	}
	time.Sleep(300 * time.Millisecond) // let TIME_WAIT and the proxies settle between runs
	if scenario == "bulk" {
		m := xferSec.FindSubmatch(out)
		if m == nil {
			return wrkRun{}, fmt.Errorf("no Transfer/sec in %s", out)
		}
		v, _ := strconv.ParseFloat(string(m[1]), 64)
		return wrkRun{value: v * map[string]float64{"B": 1.0 / (1 << 20), "KB": 1.0 / 1024, "MB": 1, "GB": 1024}[string(m[2])]}, nil
	}
	m := reqPerSec.FindSubmatch(out)
	if m == nil {
		return wrkRun{}, fmt.Errorf("no Requests/sec in %s", out)
	}
	rps, err := strconv.ParseFloat(string(m[1]), 64)
	r := wrkRun{value: rps}
	if *cpu {
		r.cpu = before.cost(after, rps*window.Seconds())
	}
	return r, err
}

// measureHeld opens n connections through s, makes one request on each, holds them, and
// returns how many it held and the growth of the proxy's resident memory and descriptors.
func measureHeld(s *system, n int) (held int, rssBytes, fds int64) {
	return measureConns(s, n, func(c net.Conn) bool {
		fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
		line, err := bufio.NewReader(c).ReadString('\n')
		return err == nil && strings.Contains(line, " 200 ")
	})
}

// measureSniffing opens n connections through s that each send the start of a request head
// and no more, as a slow client does, and holds them while the proxy waits for the rest
// (lb's --sniff-timeout is raised for it). It returns the same figures as measureHeld.
func measureSniffing(s *system, n int) (held int, rssBytes, fds int64) {
	return measureConns(s, n, func(c net.Conn) bool {
		_, err := fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: bench\r\n")
		return err == nil
	})
}

func measureConns(s *system, n int, greet func(net.Conn) bool) (held int, rssBytes, fds int64) {
	pids := processTree(s.cmd.Process.Pid)
	rss0, fds0 := usage(pids)
	var ok atomic.Int64
	var mu sync.Mutex
	var conns []net.Conn
	sem := make(chan struct{}, 64)
	var wg sync.WaitGroup
	for range n {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", s.port), 5*time.Second)
			if err != nil {
				return
			}
			c.SetDeadline(time.Now().Add(10 * time.Second))
			if !greet(c) {
				c.Close()
				return
			}
			ok.Add(1)
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}()
	}
	wg.Wait()
	time.Sleep(time.Second) // let the proxy's allocator settle before reading its RSS
	rss1, fds1 := usage(processTree(s.cmd.Process.Pid))
	for _, c := range conns {
		c.Close()
	}
	time.Sleep(2 * time.Second)
	return int(ok.Load()), rss1 - rss0, fds1 - fds0
}

// processTree is pid and its children (nginx's workers).
func processTree(pid int) []int {
	pids := []int{pid}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid)); err == nil {
		for _, f := range strings.Fields(string(b)) {
			if c, err := strconv.Atoi(f); err == nil {
				pids = append(pids, c)
			}
		}
	}
	return pids
}

func usage(pids []int) (rss, fds int64) {
	for _, pid := range pids {
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
			for _, line := range strings.Split(string(b), "\n") {
				if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
					kb, _ := strconv.ParseInt(f[1], 10, 64)
					rss += kb << 10
				}
			}
		}
		if ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid)); err == nil {
			fds += int64(len(ents))
		}
	}
	return rss, fds
}

// printTable prints the columns some system has a figure for, each with its ratio to
// haproxy's where a ratio means something.
func printTable(measured []*system, res map[string]map[string]float64) {
	base := res["haproxy"]
	at := fmt.Sprintf("@%.0f", *rate)
	all := []struct {
		key, title, format string
		ratio              bool
	}{
		{"keepalive", "keepalive r/s", "%.0f", true},
		{"keepalive cpu", "keepalive CPU µs/req", "%.1f", true},
		{"close", "close r/s", "%.0f", true},
		{"close cpu", "close CPU µs/req", "%.1f", true},
		{"bulk", "bulk MB/s", "%.0f", true},
		{"rate r/s", "achieved r/s " + at, "%.0f", false},
		{"rate mean", "mean µs " + at, "%.0f", true},
		{"rate p99", "p99 µs " + at, "%.0f", true},
		{"rate cpu", "CPU µs/req " + at, "%.1f", true},
		{"syscalls", "syscalls/req", "%.2f", true},
		{"held", "held", "%.0f", false},
		{"B/conn", "B/held conn", "%.0f", true},
		{"fds/conn", "fds/held conn", "%.2f", true},
		{"B/sniffing", "B/sniffing conn", "%.0f", true},
	}
	cols := all[:0]
	for _, c := range all {
		if slices.ContainsFunc(measured, func(s *system) bool { _, ok := res[s.name][c.key]; return ok }) {
			cols = append(cols, c)
		}
	}
	fmt.Printf("\nrounds=%d dur=%s hold=%d, median of rounds; (×) is the ratio to haproxy\n", *rounds, *dur, *hold)
	if *rate > 0 {
		fmt.Printf("%s: %.0f r/s offered open loop over %d keep-alive connections, latency from each request's scheduled send\n", at, *rate, *rateConns)
	}
	fmt.Print("\n| system |")
	for _, c := range cols {
		fmt.Printf(" %s |", c.title)
	}
	fmt.Print("\n|---|")
	for range cols {
		fmt.Print("---|")
	}
	fmt.Println()
	for _, s := range measured {
		fmt.Printf("| %s |", s.name)
		for _, c := range cols {
			v, ok := res[s.name][c.key]
			if !ok {
				fmt.Print(" - |")
				continue
			}
			fmt.Printf(" "+c.format, v)
			if b := base[c.key]; b > 0 && s.name != "haproxy" && c.ratio {
				fmt.Printf(" (%.2f×)", v/b)
			}
			fmt.Print(" |")
		}
		fmt.Println()
	}
	for _, s := range measured {
		// A system that cannot keep up is not measured at the rate asked for: its latency is
		// mostly the queue it built up.
		if got, ok := res[s.name]["rate r/s"]; ok && got < 0.98**rate {
			fmt.Printf("\n%s did not hold %.0f r/s (%.0f): its latencies are those of a queue that kept growing.\n", s.name, *rate, got)
		}
	}
}

func freePorts(n int) []int {
	var ports []int
	var lns []net.Listener
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			panic(err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	for _, ln := range lns {
		ln.Close()
	}
	return ports
}

func waitPort(port int) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nothing answers on port %d: %w", port, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func stop(cmd *exec.Cmd) {
	syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
}
