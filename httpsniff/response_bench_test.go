package httpsniff

import "testing"

func BenchmarkParseResponse(b *testing.B) {
	head := []byte(appResponse)
	b.SetBytes(int64(len(appResponseHead)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseResponse(head); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkResponseParserTrickle feeds a ResponseParser the head in 10 pieces, as 10 reads
// of the backend socket would bring it.
func BenchmarkResponseParserTrickle(b *testing.B) {
	head := []byte(appResponseHead)
	cuts := trickleCuts(len(head), 10)
	b.SetBytes(int64(len(head)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := trickleResponse(head, cuts); err != nil {
			b.Fatal(err)
		}
	}
}

// trickleResponse feeds a fresh ResponseParser head[:cut] for each cut in turn until it decides.
func trickleResponse(head []byte, cuts []int) (Response, error) {
	var p ResponseParser
	for _, cut := range cuts {
		if r, err := p.Parse(head[:cut]); err != ErrNeedMore {
			return r, err
		}
	}
	return Response{}, ErrNeedMore
}

func BenchmarkSetCookie(b *testing.B) {
	r, err := ParseResponse([]byte(appResponse))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := r.SetCookie("sessionid"); !ok {
			b.Fatal("no sessionid cookie")
		}
	}
}

func BenchmarkAppendWithField(b *testing.B) {
	head := []byte(appResponseHead)
	field := []byte(stickyField)
	dst := make([]byte, 0, len(head)+len(field)+2)
	b.SetBytes(int64(len(head)))
	b.ReportAllocs()
	for b.Loop() {
		dst = AppendWithField(dst[:0], head, field)
	}
}

func TestResponseZeroAllocs(t *testing.T) {
	head := []byte(appResponse)
	r, _ := ParseResponse(head)
	cuts := trickleCuts(r.Len, 10)
	field := []byte(stickyField)
	dst := make([]byte, 0, r.Len+len(field)+2)
	for name, f := range map[string]func(){
		"ParseResponse":           func() { ParseResponse(head) },
		"ResponseParser.Parse":    func() { var p ResponseParser; p.Parse(head) },
		"ResponseParserTrickle":   func() { trickleResponse(head, cuts) },
		"SetCookie":               func() { r.SetCookie("sessionid") },
		"SetCookie-missing":       func() { r.SetCookie("lb_srv") },
		"AppendWithField-in-room": func() { dst = AppendWithField(dst[:0], head[:r.Len], field) },
	} {
		if n := testing.AllocsPerRun(100, f); n != 0 {
			t.Errorf("%s: %v allocs per run; want 0", name, n)
		}
	}
}
