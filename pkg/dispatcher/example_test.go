package dispatcher_test

import (
	"fmt"
	"net/netip"

	"github.com/sipbalancer/sipbalancer/pkg/dispatcher"
)

func ExampleDispatcher_Pick() {
	p, err := dispatcher.NewPolicy("weighted_round_robin")
	if err != nil {
		panic(err)
	}
	var specs []dispatcher.Spec
	for i, ip := range []string{"10.0.0.11", "10.0.0.12", "10.0.0.13"} {
		specs = append(specs, dispatcher.Spec{
			ID:        fmt.Sprintf("fs%d", i+1),
			Host:      ip,
			Addr:      netip.AddrPortFrom(netip.MustParseAddr(ip), 5060),
			Transport: "UDP",
			Weight:    1,
		})
	}
	d, err := dispatcher.New(p, specs)
	if err != nil {
		panic(err)
	}
	d.Node("fs1").SetState(dispatcher.StateDown) // as health would

	// The capacity of dst is how many branches the proxy will try; the
	// proxy keeps one such slice per worker and reuses it.
	dst := make([]*dispatcher.Node, 0, 3)
	for _, n := range d.Pick(dispatcher.KeyFromString("a84b4c76e66710@pc33.example.com"), dst) {
		fmt.Println(n.ID(), n.Spec.Addr)
	}
	// Output:
	// fs2 10.0.0.12:5060
	// fs3 10.0.0.13:5060
}
