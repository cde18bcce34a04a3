package httpguard

import "sync"

// sweepChunk is how many circuits or keys a sweep drops under the write
// lock at a time: requests to the others wait for one chunk, not for the
// whole sweep.
const sweepChunk = 256

// sweepInChunks sweeps m, guarded by mu, which is held (for writing) on
// entry and again on return, without holding it for the whole sweep: it
// finds the candidates under the read lock, calls found (a test hook, if
// set), then, a chunk at a time under the write lock, calls drop for each
// candidate still in m, which checks it again and deletes it if it is to
// go: one used in between is kept. *sweeping is closed when the sweep
// ends, so that what would add to m waits for it, as it would for mu.
// The Breaker's circuits and the Limiter's keys are swept so.
func sweepInChunks[K comparable, V comparable](mu *sync.RWMutex, sweeping *chan struct{}, found func(), m map[K]V,
	candidate func(V) bool, keyOf func(V) K, drop func(V)) {
	done := make(chan struct{})
	*sweeping = done
	mu.Unlock()
	defer func() {
		mu.Lock()
		*sweeping = nil
		close(done)
	}()
	var them []V
	mu.RLock()
	for _, v := range m {
		if candidate(v) {
			if them == nil {
				them = make([]V, 0, len(m))
			}
			them = append(them, v)
		}
	}
	mu.RUnlock()
	if found != nil {
		found()
	}
	for len(them) > 0 {
		n := min(len(them), sweepChunk)
		mu.Lock()
		for _, v := range them[:n] {
			if m[keyOf(v)] == v {
				drop(v)
			}
		}
		mu.Unlock()
		them = them[n:]
	}
}
