// Command sipbalancer is a SIP load balancer for a pool of FreeSWITCH nodes.
//
//	sipbalancer -config /etc/sipbalancer/sipbalancer.yaml
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stderr))
}
