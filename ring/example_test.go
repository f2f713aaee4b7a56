package ring_test

import (
	"fmt"
	"net/netip"

	"lb/ring"
)

// How a data path uses a ring for one connection: a cursor for the client, one Active per
// dial (ended when the dial fails or the connection closes), and the next backend on failure.
func ExampleCursor_Start() {
	r, _ := ring.NewWith(ring.Config{Balance: ring.LeastConn},
		ring.Backend{ID: "a", Addr: "10.0.0.1:80"},
		ring.Backend{ID: "b", Addr: "10.0.0.2:80"},
	)
	client := netip.MustParseAddr("192.0.2.10")

	c := r.CursorFor(client) // route: once per connection
	var active ring.Active   // kept in the connection's state
	for b, ok := c.Next(); ok; b, ok = c.Next() {
		active.End()       // the failed dial before, if any
		active = c.Start() // dial: counted from now
		dialFailed := b.ID == "a"
		if !dialFailed {
			fmt.Println("connected to", b.ID, "active:", r.Snapshot()[1].Active)
			break
		}
	}
	active.End() // close
	fmt.Println("after close:", r.Snapshot()[1].Active)
	// Output:
	// connected to b active: 1
	// after close: 0
}
