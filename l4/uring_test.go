package l4

import (
	"crypto/sha256"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"
)

// TestRingBuffersRunDry: with 2 buffers a loop and 32 flows at once, each echoing 256 KiB,
// receives find the buffer ring empty (ENOBUFS) over and over; each such end receives again
// once a buffer comes back, and every byte arrives, in order.
func TestRingBuffersRunDry(t *testing.T) {
	cfg := testConfig()
	cfg.Engine = EngineUring
	if _, err := resolveEngine(EngineUring); err != nil {
		t.Skip(err)
	}
	defer func(n int) { ringBuffers = n }(ringBuffers)
	ringBuffers = 2
	s := startServer(t, cfg, startBackend(t, echo).addr())
	const flows, size = 32, 256 << 10
	var wg sync.WaitGroup
	errs := make(chan string, flows)
	for range flows {
		payload := randomBytes(t, size)
		c := dial(t, s.addr)
		c.SetDeadline(time.Now().Add(3 * time.Second)) // a flow that stalls fails the test, not its deadline
		wg.Go(func() {
			writeErr := writeThenHalfClose(c, payload)
			got, err := io.ReadAll(c)
			if werr := <-writeErr; err == nil {
				err = werr
			}
			if err != nil || sha256.Sum256(got) != sha256.Sum256(payload) {
				errs <- fmt.Sprintf("a flow got %d bytes, different from the %d sent (%v)", len(got), size, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Fatal(e)
	}
	waitFor(t, "every buffer back", func() bool { st := s.Stats(); return st.Active == 0 && st.BuffersHeld == 0 })
	if s.Stats().BufferWaits == 0 {
		t.Error("no receive found the buffer ring empty: the test did not test that")
	}
}
