// Command loadgen drives one HTTPS endpoint with a cycle of request bodies and prints a JSON
// summary: requests, errors, throughput and latency percentiles.
//
// -mode max  runs -conns closed-loop workers as fast as the server answers (max throughput).
// -mode rate sends at a fixed -rate on a schedule (open loop); latency counts from the scheduled
//
//	time, so a stalled server shows up as latency instead of silently lowering the rate.
package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

type summary struct {
	Mode       string  `json:"mode"`
	Requests   int64   `json:"requests"`
	Errors     int64   `json:"errors"`
	Non200     int64   `json:"non200"`
	Seconds    float64 `json:"seconds"`
	RPS        float64 `json:"rps"`
	TargetRate float64 `json:"target_rate,omitempty"`
	P50        float64 `json:"p50_ms"`
	P99        float64 `json:"p99_ms"`
	P999       float64 `json:"p999_ms"`
	Max        float64 `json:"max_ms"`
	FirstError string  `json:"first_error,omitempty"`
}

func readBodies(path string) ([][]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var bodies [][]byte
	scanner := bufio.NewScanner(f)
	scanner.Buffer(make([]byte, 1<<20), 1<<24)
	for scanner.Scan() {
		line := bytes.TrimSpace(scanner.Bytes())
		if len(line) > 0 {
			bodies = append(bodies, append([]byte(nil), line...))
		}
	}
	if len(bodies) == 0 {
		return nil, fmt.Errorf("%s: no bodies", path)
	}
	return bodies, scanner.Err()
}

func client(caFile string, conns int) (*http.Client, error) {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no certificates", caFile)
	}
	transport := &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		MaxIdleConns:        conns * 2,
		MaxIdleConnsPerHost: conns * 2,
		MaxConnsPerHost:     conns,
		IdleConnTimeout:     90 * time.Second,
		// The apiserver speaks HTTP/1.1 to webhooks; so do we.
		TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{},
	}
	return &http.Client{Transport: transport, Timeout: 30 * time.Second}, nil
}

type recorder struct {
	mu        sync.Mutex
	latencies []time.Duration
	errors    atomic.Int64
	non200    atomic.Int64
	firstErr  atomic.Value
}

func (r *recorder) send(c *http.Client, url string, body []byte, start time.Time) {
	resp, err := c.Post(url, "application/json", bytes.NewReader(body))
	if err != nil {
		r.errors.Add(1)
		r.firstErr.CompareAndSwap(nil, err.Error())
		return
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	elapsed := time.Since(start)
	if resp.StatusCode != http.StatusOK {
		r.non200.Add(1)
		r.firstErr.CompareAndSwap(nil, fmt.Sprintf("HTTP %d", resp.StatusCode))
	}
	r.mu.Lock()
	r.latencies = append(r.latencies, elapsed)
	r.mu.Unlock()
}

func percentile(sorted []time.Duration, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	index := int(q * float64(len(sorted)-1))
	return float64(sorted[index].Microseconds()) / 1000
}

func main() {
	url := flag.String("url", "", "endpoint, e.g. https://127.0.0.1:8443/validate")
	caFile := flag.String("ca", "", "CA certificate (PEM) to verify the server")
	bodiesFile := flag.String("bodies", "", "file with one JSON request body per line (cycled)")
	mode := flag.String("mode", "max", "max (closed loop) or rate (open loop)")
	conns := flag.Int("conns", 16, "connections (max mode: concurrent workers)")
	rate := flag.Float64("rate", 1000, "requests per second (rate mode)")
	duration := flag.Duration("duration", 10*time.Second, "measured duration")
	warmup := flag.Duration("warmup", 2*time.Second, "unmeasured warm-up before the measurement")
	flag.Parse()
	if *url == "" || *caFile == "" || *bodiesFile == "" {
		fmt.Fprintln(os.Stderr, "loadgen: -url, -ca and -bodies are required")
		os.Exit(2)
	}
	bodies, err := readBodies(*bodiesFile)
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(2)
	}
	c, err := client(*caFile, *conns)
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(2)
	}
	run := func(rec *recorder, d time.Duration) time.Duration {
		begin := time.Now()
		deadline := begin.Add(d)
		var wg sync.WaitGroup
		if *mode == "max" {
			var next atomic.Int64
			for w := 0; w < *conns; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for time.Now().Before(deadline) {
						i := next.Add(1)
						rec.send(c, *url, bodies[int(i)%len(bodies)], time.Now())
					}
				}()
			}
		} else {
			jobs := make(chan time.Time, 1<<16)
			for w := 0; w < *conns; w++ {
				wg.Add(1)
				go func(w int) {
					defer wg.Done()
					i := w
					for intended := range jobs {
						rec.send(c, *url, bodies[i%len(bodies)], intended)
						i += *conns
					}
				}(w)
			}
			interval := time.Duration(float64(time.Second) / *rate)
			for n := 0; ; n++ {
				intended := begin.Add(time.Duration(n) * interval)
				if !intended.Before(deadline) {
					break
				}
				if wait := time.Until(intended); wait > 0 {
					time.Sleep(wait)
				}
				jobs <- intended
			}
			close(jobs)
		}
		wg.Wait()
		return time.Since(begin)
	}
	if *warmup > 0 {
		run(&recorder{}, *warmup)
	}
	rec := &recorder{}
	elapsed := run(rec, *duration)
	sort.Slice(rec.latencies, func(i, j int) bool { return rec.latencies[i] < rec.latencies[j] })
	out := summary{
		Mode:     *mode,
		Requests: int64(len(rec.latencies)),
		Errors:   rec.errors.Load(),
		Non200:   rec.non200.Load(),
		Seconds:  elapsed.Seconds(),
		RPS:      float64(len(rec.latencies)) / elapsed.Seconds(),
		P50:      percentile(rec.latencies, 0.50),
		P99:      percentile(rec.latencies, 0.99),
		P999:     percentile(rec.latencies, 0.999),
	}
	if n := len(rec.latencies); n > 0 {
		out.Max = float64(rec.latencies[n-1].Microseconds()) / 1000
	}
	if *mode == "rate" {
		out.TargetRate = *rate
	}
	if v, ok := rec.firstErr.Load().(string); ok {
		out.FirstError = v
	}
	_ = json.NewEncoder(os.Stdout).Encode(out)
}
