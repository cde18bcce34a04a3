package bench

import (
	"bytes"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkMachine prices, on the machine it runs on, the operations that
// decide how the full stack compares with go-retryablehttp there: reading
// the clock (time.Now reads it twice, time.Since once), a locked
// instruction (each atomic add or compare-and-swap; a mutex's Lock and
// Unlock are one each), testing bytes one at a time (what reading JSON
// does, where go-retryablehttp copies) and copying them. Its figures are
// machine facts, not httpguard's: they say why BenchmarkStack's differ
// from one machine to another.
func BenchmarkMachine(b *testing.B) {
	b.Run("time.Now", func(b *testing.B) {
		for b.Loop() {
			_ = time.Now()
		}
	})
	b.Run("time.Since", func(b *testing.B) {
		start := time.Now()
		for b.Loop() {
			_ = time.Since(start)
		}
	})
	var n atomic.Int64
	b.Run("atomic.Add", func(b *testing.B) {
		for b.Loop() {
			n.Add(1)
		}
	})
	b.Run("atomic.CompareAndSwap", func(b *testing.B) {
		for b.Loop() {
			v := n.Load()
			n.CompareAndSwap(v, v+1)
		}
	})
	var mu sync.Mutex
	b.Run("mutex", func(b *testing.B) {
		for b.Loop() {
			mu.Lock()
			mu.Unlock()
		}
	})
	src := bytes.Repeat([]byte("abcdefgh"), 1024)
	b.Run("byte-loop-8KiB", func(b *testing.B) {
		b.SetBytes(int64(len(src)))
		quotes := 0
		for b.Loop() {
			for _, c := range src {
				if c == '"' {
					quotes++
				}
			}
		}
		_ = quotes
	})
	dst := make([]byte, len(src))
	b.Run("copy-8KiB", func(b *testing.B) {
		b.SetBytes(int64(len(src)))
		for b.Loop() {
			copy(dst, src)
		}
	})
}
