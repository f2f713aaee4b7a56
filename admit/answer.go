package admit

import "strconv"

// tooManyBody is the body of the 429 answer.
const tooManyBody = "too many connections from your address; retry later\n"

// AppendTooMany appends the HTTP/1.1 answer to a client over a per-address limit:
// 429 Too Many Requests, Retry-After: retryAfter seconds (at least 1), and Connection:
// close, for lb closes the connection after it. It allocates nothing when b has
// TooManyLen bytes spare.
func AppendTooMany(b []byte, retryAfter int) []byte {
	b = append(b, "HTTP/1.1 429 Too Many Requests\r\nRetry-After: "...)
	b = strconv.AppendInt(b, int64(max(1, retryAfter)), 10)
	b = append(b, "\r\nContent-Type: text/plain\r\nContent-Length: "...)
	b = strconv.AppendInt(b, int64(len(tooManyBody)), 10)
	return append(b, "\r\nConnection: close\r\n\r\n"+tooManyBody...)
}

// TooManyLen bounds the length of AppendTooMany's answer.
const TooManyLen = 192
