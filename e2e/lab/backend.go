package lab

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"
)

// BackendCommand is the hidden first argument that makes a program using the lab run a backend
// server instead of its own main (see RunBackendIfAsked). The lab starts backends as
// `<Config.Backend...> __lab-backend --name node1-pod1 --node node1` inside the pod's namespace.
const BackendCommand = "__lab-backend"

// GetCommand makes the lab binary a client: `__lab-get URL` fetches URL (retrying for up to
// a minute), prints the answer and exits 0, or exits 1: a pod that reaches a Service.
const GetCommand = "__lab-get"

// ReadyPath is the backend's readiness endpoint (ServeBackend).
const ReadyPath = "/ready"

// PauseCommand makes the lab binary a pod sandbox's pause process (the real nodes' PauseImage):
// it holds the pod's namespaces and exits on SIGTERM or SIGINT.
const PauseCommand = "__lab-pause"

// RunBackendIfAsked runs the backend server and exits when the program was started as a backend;
// otherwise it returns at once. Call it first thing in main (bin/lab) or TestMain (e2e tests), so one
// binary serves as the lab's tool and its backend "pods".
func RunBackendIfAsked() {
	if len(os.Args) >= 2 && os.Args[1] == PauseCommand {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
		<-sig
		os.Exit(0)
	}
	if len(os.Args) == 3 && os.Args[1] == GetCommand {
		os.Exit(getUntilAnswered(os.Args[2], time.Minute))
	}
	if len(os.Args) < 2 || os.Args[1] != BackendCommand {
		return
	}
	fs := flag.NewFlagSet(BackendCommand, flag.ExitOnError)
	name := fs.String("name", "", "the backend's name, returned in every answer")
	node := fs.String("node", "", "the node the backend runs behind")
	listen := fs.String("listen", ":"+strconv.Itoa(BackendPort), "TCP (HTTP) and UDP (echo) address")
	_ = fs.Parse(os.Args[2:])
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := ServeBackend(ctx, *name, *node, *listen); err != nil {
		fmt.Fprintln(os.Stderr, "backend:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// ServeBackend answers every HTTP request on address (":8080": all addresses, both families) and
// every UDP datagram on the same address with a JSON BackendReply naming the backend and the client address it
// saw, until ctx ends. The client address is what makes SNAT and source-IP preservation testable.
func ServeBackend(ctx context.Context, name, node, addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	udp, err := net.ListenPacket("udp", addr)
	if err != nil {
		ln.Close()
		return err
	}
	mux := http.NewServeMux()
	// /ready is the readiness probe's path (BackendDeployment): 200 until a PUT /ready?ready=false,
	// then 503 until a PUT /ready?ready=true; "/" answers all along, so a backend whose probe
	// fails still serves whoever is sent to it (tests see whether the data plane still does).
	var unready atomic.Bool
	mux.HandleFunc(ReadyPath, func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut {
			unready.Store(r.URL.Query().Get("ready") == "false")
		}
		if unready.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(BackendReply{Backend: name, Node: node, Client: r.RemoteAddr})
	})
	// /stream?interval=10ms answers with one reply line per interval until the client goes away:
	// a long-lived connection for tests that change endpoints under an open stream.
	mux.HandleFunc("/stream", func(w http.ResponseWriter, r *http.Request) {
		interval, err := time.ParseDuration(r.URL.Query().Get("interval"))
		if err != nil || interval <= 0 {
			interval = 10 * time.Millisecond
		}
		w.Header().Set("Content-Type", "application/x-ndjson")
		enc := json.NewEncoder(w)
		flusher, _ := w.(http.Flusher)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			if err := enc.Encode(BackendReply{Backend: name, Node: node, Client: r.RemoteAddr}); err != nil {
				return
			}
			if flusher != nil {
				flusher.Flush()
			}
			select {
			case <-r.Context().Done():
				return
			case <-t.C:
			}
		}
	})
	srv := &http.Server{Handler: mux}
	go func() {
		buf := make([]byte, 2048)
		for {
			_, from, err := udp.ReadFrom(buf)
			if err != nil {
				return
			}
			b, _ := json.Marshal(BackendReply{Backend: name, Node: node, Client: from.String()})
			_, _ = udp.WriteTo(append(b, '\n'), from)
		}
	}()
	go func() {
		<-ctx.Done()
		udp.Close()
		_ = srv.Close()
	}()
	if err := srv.Serve(ln); err != http.ErrServerClosed {
		return err
	}
	return nil
}

// getUntilAnswered fetches url until it answers 200 or timeout passes; it prints the answer (or
// the last error) and returns the exit code.
func getUntilAnswered(url string, timeout time.Duration) int {
	c := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(timeout)
	for {
		ans, err := FetchHTTP(c, url)
		if err == nil && ans.Code == http.StatusOK {
			fmt.Println(ans.Body)
			return 0
		}
		if time.Now().After(deadline) {
			fmt.Fprintf(os.Stderr, "GET %s: %v %v\n", url, ans, err)
			return 1
		}
		time.Sleep(200 * time.Millisecond)
	}
}
