// Command demo-backend serves a few tiny HTTP backends on loopback for the
// README's demo: each answers with its own address, and /health answers 200
// until the file named by -down-file exists for that port.
package main

import (
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

func main() {
	ports := flag.String("ports", "9001,9002,9003", "comma-separated ports to listen on (127.0.0.1)")
	downDir := flag.String("down-dir", "", "a directory: while <dir>/<port> exists, that backend's /health answers 503")
	flag.Parse()
	for _, p := range strings.Split(*ports, ",") {
		addr := net.JoinHostPort("127.0.0.1", strings.TrimSpace(p))
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			log.Fatalf("listen %s: %v", addr, err)
		}
		port := strings.TrimSpace(p)
		mux := http.NewServeMux()
		mux.HandleFunc("/health", func(w http.ResponseWriter, r *http.Request) {
			if *downDir != "" {
				if _, err := os.Stat(*downDir + "/" + port); err == nil {
					http.Error(w, "down", http.StatusServiceUnavailable)
					return
				}
			}
			fmt.Fprintln(w, "ok")
		})
		mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "hello from backend %s\n", addr)
		})
		go func() { log.Fatal(http.Serve(ln, mux)) }()
		log.Printf("backend listening on %s", addr)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	<-sig
}
