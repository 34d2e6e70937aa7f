package controller

import (
	"context"
	"runtime"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/heraldlb/herald/internal/realapi"
)

// TestRunAndRunCloudProviderStopEverything: in both modes, once Run or RunCloudProvider has
// returned, its queues are shut down and none of the goroutines it started (workers, loops) is
// left running.
func TestRunAndRunCloudProviderStopEverything(t *testing.T) {
	api := realapi.Start(t)
	cs := kubernetes.NewForConfigOrDie(api.Config)
	for _, mode := range []string{ModeNative, ModeCloudProvider} {
		t.Run(mode, func(t *testing.T) {
			c, err := New(cs, api.Config, Options{Workers: 4})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() {
				if mode == ModeCloudProvider {
					done <- c.RunCloudProvider(ctx)
				} else {
					done <- c.Run(ctx)
				}
			}()
			// Stopped once its workers run (a stop while the informers sync is an error of start's).
			for end := time.Now().Add(60 * time.Second); countWorkers() < 2; time.Sleep(10 * time.Millisecond) {
				if time.Now().After(end) {
					t.Fatal("the workers did not start")
				}
			}
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("did not return after its context ended")
			}
			if !c.queue.ShuttingDown() || !c.poolQueue.ShuttingDown() {
				t.Errorf("queues after return: services shutting down %v, pools %v; want both", c.queue.ShuttingDown(), c.poolQueue.ShuttingDown())
			}
			// A goroutine that called Done may still be unwinding its last frame: a moment's grace,
			// where one left behind stays for ever.
			var left []string
			for end := time.Now().Add(2 * time.Second); ; time.Sleep(10 * time.Millisecond) {
				if left = controllerGoroutines(); len(left) == 0 || time.Now().After(end) {
					break
				}
			}
			if len(left) > 0 {
				t.Errorf("%d goroutines of the controller still running after return, e.g.:\n%s", len(left), left[0])
			}
		})
	}
}

// countWorkers counts the goroutines in work.
func countWorkers() int {
	n := 0
	for _, g := range controllerGoroutines() {
		if strings.Contains(g, "herald/controller.work(") {
			n++
		}
	}
	return n
}

// controllerGoroutines returns the stacks of the goroutines running a method of the controller's
// types, or its work loop.
func controllerGoroutines() []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		for _, fn := range []string{"(*Controller)", "(*announcedWriter)", "(*bgpObjects)", "work("} {
			if strings.Contains(g, "herald/controller."+fn) {
				out = append(out, g)
				break
			}
		}
	}
	return out
}
