package httpsniff

import "testing"

func BenchmarkParse(b *testing.B) {
	head := []byte(chromeHead)
	b.SetBytes(int64(len(head)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(head); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCookie(b *testing.B) {
	h, err := Parse([]byte(chromeHead))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := h.Cookie("lb_srv"); !ok {
			b.Fatal("no lb_srv cookie")
		}
	}
}

// BenchmarkParserTrickle feeds a Parser the head in 10 pieces, as 10 reads would bring it;
// resuming should keep it close to BenchmarkParse.
func BenchmarkParserTrickle(b *testing.B) {
	head := []byte(chromeHead)
	cuts := trickleCuts(len(head), 10)
	b.SetBytes(int64(len(head)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := trickle(head, cuts); err != nil {
			b.Fatal(err)
		}
	}
}

// trickleCuts splits n bytes into pieces of about equal size and returns where each ends.
func trickleCuts(n, pieces int) []int {
	cuts := make([]int, pieces)
	for i := range cuts {
		cuts[i] = n * (i + 1) / pieces
	}
	return cuts
}

// trickle feeds a fresh Parser head[:cut] for each cut in turn until it decides.
func trickle(head []byte, cuts []int) (Head, error) {
	var p Parser
	for _, cut := range cuts {
		if h, err := p.Parse(head[:cut]); err != ErrNeedMore {
			return h, err
		}
	}
	return Head{}, ErrNeedMore
}

func TestZeroAllocs(t *testing.T) {
	head := []byte(chromeHead)
	h, _ := Parse(head)
	cuts := trickleCuts(len(head), 10)
	var p Parser
	for name, f := range map[string]func(){
		"Parse":         func() { Parse(head) },
		"Parser.Parse":  func() { p = Parser{}; p.Parse(head) },
		"ParserTrickle": func() { trickle(head, cuts) },
		"Cookie":        func() { h.Cookie("lb_srv") },
	} {
		if n := testing.AllocsPerRun(100, f); n != 0 {
			t.Errorf("%s: %v allocs per run; want 0", name, n)
		}
	}
}
