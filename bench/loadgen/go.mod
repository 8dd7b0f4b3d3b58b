// Load generator for `make bench`: keep-alive HTTPS, closed-loop max throughput and
// open-loop fixed-rate latency (measured from the intended send time). Standard library only.
module github.com/kube-agent-guard/bench/loadgen

go 1.22
