package accesslog

// MaxRequestBytes bounds what a Request keeps of a request's method, host and path
// together; a longer path is cut to fit (an access log line is not the place for a 16 KiB
// query string).
const MaxRequestBytes = 1024

// Request keeps a copy of a connection's first request method, host and path until the
// connection closes: the head buffer they were parsed from is gone by then. It reuses its
// buffer, so a Request kept per connection slot (or per slot only while the log is on)
// allocates only while the longest request it has held grows. The zero value is empty.
type Request struct {
	buf          []byte
	method, host int // lengths of the method and host at the start of buf; the path follows
}

// Set copies method, host and path (views into a head buffer) into r, cutting what passes
// MaxRequestBytes: the path first, then the host.
func (r *Request) Set(method, host, path []byte) {
	method = method[:min(len(method), MaxRequestBytes)]
	host = host[:min(len(host), MaxRequestBytes-len(method))]
	path = path[:min(len(path), MaxRequestBytes-len(method)-len(host))]
	r.buf = append(append(append(r.buf[:0], method...), host...), path...)
	r.method, r.host = len(method), len(host)
}

// Reset empties r, keeping its buffer: a connection that is not HTTP/1 logs no request.
func (r *Request) Reset() { r.buf, r.method, r.host = r.buf[:0], 0, 0 }

// Fill sets e's Method, Host and Path to views of r, valid until r is Set or Reset again.
func (r *Request) Fill(e *Entry) {
	e.Method = r.buf[:r.method]
	e.Host = r.buf[r.method : r.method+r.host]
	e.Path = r.buf[r.method+r.host:]
}
