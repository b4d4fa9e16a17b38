// Command client measures new TLS handshakes per second against one server.
//
// Every connection is a full handshake (no session resumption), closed right after it
// completes. N goroutines loop for the given duration; the result is printed as JSON.
// Standard library only: build with Debian's golang-go, no module downloads.
package main

import (
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:443", "server address")
	sni := flag.String("sni", "bench.example.com", "server name to send")
	workers := flag.Int("c", 32, "concurrent connections")
	duration := flag.Duration("d", 5*time.Second, "how long to run")
	version := flag.String("tls", "1.3", "TLS version: 1.2 or 1.3")
	flag.Parse()

	v := uint16(tls.VersionTLS13)
	if *version == "1.2" {
		v = tls.VersionTLS12
	}
	config := &tls.Config{
		ServerName:             *sni,
		InsecureSkipVerify:     true, // the bench measures the server, not chain building
		MinVersion:             v,
		MaxVersion:             v,
		ClientSessionCache:     nil, // every handshake is a full one
		SessionTicketsDisabled: true,
	}
	var ok, failed int64
	deadline := time.Now().Add(*duration)
	var wg sync.WaitGroup
	var firstErr atomic.Value
	for i := 0; i < *workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dialer := &net.Dialer{Timeout: 5 * time.Second}
			for time.Now().Before(deadline) {
				conn, err := tls.DialWithDialer(dialer, "tcp", *addr, config)
				if err != nil {
					atomic.AddInt64(&failed, 1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				atomic.AddInt64(&ok, 1)
				conn.Close()
			}
		}()
	}
	started := time.Now()
	wg.Wait()
	elapsed := time.Since(started).Seconds()
	result := map[string]interface{}{
		"handshakes": ok,
		"failed":     failed,
		"seconds":    elapsed,
		"rate":       float64(ok) / elapsed,
	}
	if e := firstErr.Load(); e != nil {
		result["first_error"] = e
	}
	if err := json.NewEncoder(os.Stdout).Encode(result); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
