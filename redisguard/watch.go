package redisguard

import (
	"context"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// watcher shares one Redis subscription among the waiters of a store: the
// first watch subscribes to the store's channel, and every message (a
// window's name) wakes the waiters of that window. The subscription lasts
// until close; go-redis reconnects it after Redis comes back. Notices
// published while it is away are lost, which is why waiters also poll.
type watcher struct {
	client  redis.UniversalClient
	channel string
	timeout time.Duration

	mu      sync.Mutex
	ps      *redis.PubSub // nil until the first watch
	waiters map[string]map[chan struct{}]struct{}
	closed  bool
	running sync.WaitGroup
}

// watch returns a channel that receives (coalesced) when money is released
// in window, until ctx ends.
func (w *watcher) watch(ctx context.Context, window string) <-chan struct{} {
	ch := make(chan struct{}, 1)
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return ch // never receives: the waiter polls
	}
	if w.ps == nil {
		w.ps = w.client.Subscribe(context.Background()) // no channel yet: no I/O
		w.waiters = make(map[string]map[chan struct{}]struct{})
		w.running.Add(1)
		go w.run(w.ps)
	}
	set := w.waiters[window]
	if set == nil {
		set = make(map[chan struct{}]struct{})
		w.waiters[window] = set
	}
	set[ch] = struct{}{}
	context.AfterFunc(ctx, func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		delete(set, ch)
		if len(w.waiters[window]) == 0 { // set, or a newer one left empty
			delete(w.waiters, window)
		}
	})
	return ch
}

// run subscribes and hands each notice to the waiters of its window.
func (w *watcher) run(ps *redis.PubSub) {
	defer w.running.Done()
	ctx, cancel := context.WithTimeout(context.Background(), w.timeout)
	_ = ps.Subscribe(ctx, w.channel) // on failure, the channel below reconnects and subscribes
	cancel()
	for msg := range ps.Channel() {
		w.mu.Lock()
		for ch := range w.waiters[msg.Payload] {
			select {
			case ch <- struct{}{}:
			default: // a notice is already pending
			}
		}
		w.mu.Unlock()
	}
}

// close ends the subscription.
func (w *watcher) close() {
	w.mu.Lock()
	w.closed = true
	ps := w.ps
	w.mu.Unlock()
	if ps != nil {
		ps.Close()
	}
	w.running.Wait()
}
