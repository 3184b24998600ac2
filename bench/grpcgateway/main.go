// Command grpc-gateway-bench is the benchmark's grpc-gateway row: grpc-gateway v2's reverse proxy,
// with handlers generated from our protos at bench time (bench/gogateway.py), in front of a
// `hypertrack-gateway grpc` process. It is what a user would put in front of the gRPC service
// instead of our REST front end, so the benchmark can measure ours against it.
//
//	grpc-gateway-bench --port 0 --backend 127.0.0.1:50051
//
// Like the benchmark's other servers it prints the port it bound ("REST http://127.0.0.1:PORT"),
// then a line starting "Stop with Ctrl-C or SIGTERM", and stops on SIGTERM.
//
// The JSON options are the ones a user would pick to come close to our shape: proto field names
// (snake_case) and every field written, set or not. The rest is protojson's default, which is not
// the contract's: enums as their proto names, unset fields as null or zero values, timestamps in
// RFC 3339 with 0, 3, 6 or 9 fractional digits, GeoJSON points, polylines, timeline entries and
// metadata as the messages they are kept in (metadata's integers as int64 strings). The row
// measures speed, not shape (bench/README.md lists the differences).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	// The error details our gRPC server sends (ErrorInfo, BadRequest, RetryInfo): linked in so that
	// grpc-gateway can write an error's details as JSON rather than fail with a 500.
	_ "google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"

	ordersv1 "hypertrackbench/gen/ordersv1"
)

// shutdownGrace bounds how long requests in flight may take to finish after SIGTERM.
const shutdownGrace = 10 * time.Second

func main() {
	host := flag.String("host", "127.0.0.1", "address to listen on")
	port := flag.Int("port", 0, "port to listen on (0: any free port, printed in the banner)")
	backend := flag.String("backend", "", "the gRPC server to call, host:port")
	flag.Parse()
	if *backend == "" {
		fmt.Fprintln(os.Stderr, "grpc-gateway-bench: --backend is required")
		os.Exit(2)
	}
	if err := run(*host, *port, *backend); err != nil {
		log.Fatalf("grpc-gateway-bench: %v", err)
	}
}

func run(host string, port int, backend string) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()

	mux := runtime.NewServeMux(
		runtime.WithMarshalerOption(runtime.MIMEWildcard, &runtime.JSONPb{
			MarshalOptions:   protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true},
			UnmarshalOptions: protojson.UnmarshalOptions{DiscardUnknown: true},
		}),
	)
	// One client connection to the backend, as grpc-gateway's own examples set it up: gRPC
	// multiplexes every request over it.
	dial := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	if err := ordersv1.RegisterOrdersServiceHandlerFromEndpoint(ctx, mux, backend, dial); err != nil {
		return fmt.Errorf("registering the handlers of %s: %w", backend, err)
	}

	listener, err := net.Listen("tcp", net.JoinHostPort(host, fmt.Sprint(port)))
	if err != nil {
		return err
	}
	bound := listener.Addr().(*net.TCPAddr).Port
	fmt.Printf("grpc-gateway v2 (Go) reverse proxy\n")
	fmt.Printf("  REST  http://%s:%d  (backend: %s)\n", host, bound, backend)
	fmt.Printf("Stop with Ctrl-C or SIGTERM\n")

	server := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- server.Serve(listener) }()
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	if err := server.Shutdown(shutdown); err != nil {
		return err
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
