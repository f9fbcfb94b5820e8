package sds

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"google.golang.org/grpc"
)

// BenchmarkBundleFanout opens many SDS streams for one workload and measures the time from one bundle
// change to every stream having received it. Client and server share the process, so the memory figure
// (heap per stream) covers both ends.
func BenchmarkBundleFanout(b *testing.B) {
	for _, n := range []int{1000, 5000} {
		b.Run(fmt.Sprintf("%d streams", n), func(b *testing.B) {
			benchFanout(b, n)
		})
	}
}

func benchFanout(b *testing.B, n int) {
	e := newEnv(b)
	conns := []*grpc.ClientConn{e.connA}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)

	got := make(chan struct{}, n)
	var ready sync.WaitGroup
	for i := range n {
		st, err := secretv3.NewSecretDiscoveryServiceClient(conns[i%len(conns)]).StreamSecrets(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if err := st.Send(&discoveryv3.DiscoveryRequest{TypeUrl: SecretType, ResourceNames: []string{"default", "ROOTCA"}}); err != nil {
			b.Fatal(err)
		}
		ready.Add(1)
		go func() {
			first := true
			for {
				if _, err := st.Recv(); err != nil {
					return
				}
				if first {
					first = false
					ready.Done()
					continue
				}
				got <- struct{}{}
			}
		}()
	}
	ready.Wait()
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		e.cache.SetBundle(e.bundleWithExtraRoot())
		for range n {
			<-got
		}
		b.ReportMetric(float64(time.Since(start).Milliseconds()), "ms-fanout")
	}
	b.ReportMetric(float64(after.HeapInuse-before.HeapInuse)/float64(n)/1024, "KiB-heap/stream")
}
