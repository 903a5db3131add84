// The anchor for `integrationd bench heartbeat`: HashiCorp go-plugin's gRPC transport
// doing the same thing on the same machine. One binary is both host and plugin (go-plugin
// starts it again as the plugin when the magic cookie is set). It spawns the plugin
// `-spawns` times (median spawn to first successful health check), then times `-calls`
// grpc.health.v1 Check round trips over the Unix socket, and prints the same line as
// `integrationd bench heartbeat`.
package main

import (
	"context"
	"flag"
	"fmt"
	"io/ioutil"
	"log"
	"os"
	"os/exec"
	"sort"
	"time"

	hclog "github.com/hashicorp/go-hclog"
	plugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

var handshake = plugin.HandshakeConfig{
	ProtocolVersion:  1,
	MagicCookieKey:   "BENCH_ANCHOR_COOKIE",
	MagicCookieValue: "anchor",
}

type idle struct{ plugin.Plugin }

func (idle) GRPCServer(*plugin.GRPCBroker, *grpc.Server) error { return nil }
func (idle) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, c *grpc.ClientConn) (interface{}, error) {
	return c, nil
}

var plugins = map[string]plugin.Plugin{"idle": idle{}}

func start(self string) (*plugin.Client, healthpb.HealthClient) {
	client := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  handshake,
		Plugins:          plugins,
		Cmd:              exec.Command(self),
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		Logger:           hclog.New(&hclog.LoggerOptions{Output: ioutil.Discard, Level: hclog.Error}),
	})
	rpc, err := client.Client()
	if err != nil {
		log.Fatal(err)
	}
	health := healthpb.NewHealthClient(rpc.(*plugin.GRPCClient).Conn)
	if _, err := health.Check(context.Background(), &healthpb.HealthCheckRequest{Service: "plugin"}); err != nil {
		log.Fatal(err)
	}
	return client, health
}

func percentile(sorted []time.Duration, q float64) time.Duration {
	rank := int(float64(len(sorted))*q + 0.999999)
	if rank < 1 {
		rank = 1
	}
	if rank > len(sorted) {
		rank = len(sorted)
	}
	return sorted[rank-1]
}

func main() {
	if os.Getenv(handshake.MagicCookieKey) == handshake.MagicCookieValue {
		plugin.Serve(&plugin.ServeConfig{HandshakeConfig: handshake, Plugins: plugins, GRPCServer: plugin.DefaultGRPCServer})
		return
	}
	calls := flag.Int("calls", 10000, "timed health checks")
	spawns := flag.Int("spawns", 20, "timed spawns (median reported)")
	flag.Parse()
	self, err := os.Executable()
	if err != nil {
		log.Fatal(err)
	}
	var spawnTimes []time.Duration
	var kept *plugin.Client
	var health healthpb.HealthClient
	for i := 0; i < *spawns; i++ {
		begin := time.Now()
		client, h := start(self)
		spawnTimes = append(spawnTimes, time.Since(begin))
		if i+1 == *spawns {
			kept, health = client, h
		} else {
			client.Kill()
		}
	}
	request := &healthpb.HealthCheckRequest{Service: "plugin"}
	for i := 0; i < 1000 && i < *calls; i++ {
		health.Check(context.Background(), request)
	}
	latencies := make([]time.Duration, 0, *calls)
	all := time.Now()
	for i := 0; i < *calls; i++ {
		sent := time.Now()
		if _, err := health.Check(context.Background(), request); err != nil {
			log.Fatal(err)
		}
		latencies = append(latencies, time.Since(sent))
	}
	total := time.Since(all)
	kept.Kill()
	sort.Slice(spawnTimes, func(a, b int) bool { return spawnTimes[a] < spawnTimes[b] })
	sort.Slice(latencies, func(a, b int) bool { return latencies[a] < latencies[b] })
	fmt.Printf("spawn_ms=%.3f p50_us=%.1f p99_us=%.1f calls_per_s=%.0f\n",
		float64(percentile(spawnTimes, 0.5).Microseconds())/1000,
		float64(percentile(latencies, 0.5).Nanoseconds())/1000,
		float64(percentile(latencies, 0.99).Nanoseconds())/1000,
		float64(*calls)/total.Seconds())
}
