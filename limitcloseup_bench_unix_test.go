//go:build unix

package httpguard

import (
	"context"
	"math/rand/v2"
	"syscall"
	"testing"
	"time"
)

// BenchmarkLimiterCancelMidQueue measures the CPU a request given up in
// the middle of a queue costs the process (see closeUp): 1,000 requests
// queued at 1/s (Burst 1), one cancelled at random each op, 1 ms apart,
// and one more queued at the end to keep the queue's length. cpu-ns/op is
// the process's user and system time per op, the woken requests' work
// included.
func BenchmarkLimiterCancelMidQueue(b *testing.B) {
	const queued = 1000
	l, err := NewLimiter(LimitConfig{RequestsPerSecond: 1, Burst: 1, MaxWait: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	rt := l.Wrap(limMemTransport{})
	req := benchRequest(b, false)
	roundTripOnce(b, rt, req)
	cancels := make([]context.CancelFunc, 0, queued)
	done := make(chan struct{}, queued+b.N)
	queue := func() {
		ctx, cancel := context.WithCancel(context.Background())
		cancels = append(cancels, cancel)
		go func() {
			defer func() { done <- struct{}{} }()
			if resp, err := rt.RoundTrip(req.WithContext(ctx)); err == nil {
				resp.Body.Close()
			}
		}()
	}
	for range queued {
		queue()
	}
	time.Sleep(200 * time.Millisecond)
	cpu := func() time.Duration {
		var ru syscall.Rusage
		if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
			b.Fatal(err)
		}
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	b.ResetTimer()
	start := cpu()
	for range b.N {
		i := 1 + rand.IntN(len(cancels)-1) // not the first place
		cancels[i]()
		cancels = append(cancels[:i], cancels[i+1:]...)
		queue()
		time.Sleep(time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // the woken requests sleep again
	used := cpu() - start
	b.StopTimer()
	b.ReportMetric(float64(used)/float64(b.N), "cpu-ns/op")
	for _, cancel := range cancels {
		cancel()
	}
	for range queued + b.N {
		<-done
	}
}
