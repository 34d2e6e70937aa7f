// Command heraldctl is the operator's CLI for Herald: status, and migration from MetalLB.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/heraldlb/herald/heraldctl"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := heraldctl.Execute(ctx, os.Args[1:], heraldctl.StdStreams())
	stop()
	os.Exit(code)
}
