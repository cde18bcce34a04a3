package httpguard

import (
	"context"
	"math"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// This file is what a Limiter keeps in the process for each key: the queue
// of the requests waiting for a turn, and the key's adaptive request rate.
// The buckets themselves are in the LimitStore (limitstore.go), which
// several processes may share; the queue and the rate are this process's.

// keyID identifies a key without building its name: the default key is
// {host, model}, a LimitConfig.Key's is {key, ""}.
type keyID struct {
	host, model string
	free        bool // the key of the model's free endpoints (see FreeEndpoint)
}

// keyState is what this process keeps of one key: its queue and its
// adaptive rate. Its fields are guarded by mu, except the atomic ones.
type keyState struct {
	// What every request writes, on a line of its own (see cacheLine):
	// first, in an object of 512 bytes, which the allocator thus places
	// on a line's start (TestKeyStateHotLine).
	//
	// requests counts the requests of this key that reached the Limiter
	// (see Limiter.Stats): on the line every request writes anyway, not
	// on one of the Limiter's that every core would also bounce.
	requests atomic.Uint64
	// fast counts the requests in takeFast that found the lane open and
	// have not yet recorded their turn: lock waits for them, so that
	// whoever holds mu sees every turn taken before it closed the lane.
	fast atomic.Int32
	// In nanoseconds since born: when a request was sent last and the gap
	// it takes.
	lastSent, lastGap atomic.Int64
	sends             windowCount // requests sent lately
	// own is the state the key offers the Limiter's own store (see
	// stateHint), whose times, first in it, are on this line too; guarded
	// as the store guards its states, not by mu.
	own gcraState

	id      keyID
	name    string      // the key as the store, errors and events name it
	dropped atomic.Bool // swept: the Limiter no longer holds this state

	// lane is from when, in nanoseconds since born, a request may take
	// its turn without mu (see takeFast): when nobody holds a place in the
	// queue, the rate is not lowered and mu is free; math.MaxInt64 (never)
	// otherwise. Whoever takes mu closes it; unlock opens it again.
	lane atomic.Int64
	born time.Time // never changes
	// stored is the key's state in the Limiter's own store, kept to spare
	// the store looking it up; guarded by the store's mu, not by ks.mu.
	stored stateHint
	// lastUsed is when, in nanoseconds since born, the key was used last
	// other than by takeFast, which records only lastSent (see used).
	lastUsed atomic.Int64

	mu sync.Mutex
	// The queue: the places held, in the order they were taken, which a
	// pause or a lowered rate keeps (see restart); last is the last, whose
	// next is the first (a ring), nil when nobody holds one. The request
	// taking the next place goes no earlier than next. When next is not
	// after now, nobody is queued. shift is how far the queue has moved
	// back in all.
	next    time.Time
	shift   time.Duration
	last    *queuedPlace
	waiting int32 // requests holding a place
	// asks counts the requests that found nobody queued and ask a store
	// the config names (see turn); beyond as many as the buckets could
	// grant within a round trip (see askers), the others wait in line, a
	// ring like the queue's (line is the last), for an answer, and ask
	// or queue one after the other.
	asks     int16
	adapting bool // the rate is lowered (see Adaptive rate, below)
	// nextTokens is set when the tokens bucket set the gap before next,
	// which a request that finds nobody queued waits for (see queueBy).
	// In the room waiting, asks and adapting leave: the keyState stays
	// 512 bytes.
	nextTokens bool
	line       *queuedPlace
	paused     time.Time // the latest pause this process was told of, or found in the store

	// Adaptive rate: after a 429 the rate follows
	// W(t) = C·(t−K)³ + Wmax, K = ∛(Wmax·(1−β)/C), t since the decrease,
	// which starts at β·Wmax and is back at Wmax after K seconds.
	rate         float64 // the requests bucket's rate in force
	wmax         float64
	lastDecrease time.Time
	seen         uint64 // the fleet's decreases adopted (see AdaptiveRate)

	refused windowCount // requests the provider refused lately

	// l is the Limiter the key is of: a request's tokenCorrection finds it
	// here, which keeps the Budget's attempt, where it lies, in its size
	// class. It never changes.
	l *Limiter

	// lastDebit is when, in nanoseconds since born, a correction last
	// added tokens to the key's bucket (an answer that used more than its
	// estimate): a credit counts from it, or from lastSent, the later
	// (see tokenCorrection.asOf). Off the line every request writes:
	// debits are few.
	lastDebit atomic.Int64

	// wake is closed when a server pause or a lowered rate moves the
	// places in the queue, waking the requests asleep to a turn taken
	// ahead (see pauseWake); nil until one sleeps. Its 8 bytes take the keyState to
	// 512 (see requests): the largest size class whose objects the
	// allocator places at whole multiples of their size, with no header
	// before them.
	wake chan struct{}
}

// pauseWake returns the channel a restart closes, for a request about to
// sleep to a turn taken ahead of its time (see AheadLimitStore); one
// asleep in ks's queue sleeps on its place's (see placeWake). A pause or
// a lowered rate that moves the key's places (see restart) wakes the
// requests asleep on either, so that a request whose turn it puts beyond
// what it may wait is refused then, not once it has slept to the place it
// had, and the others sleep again to their new places (see
// Limiter.acquire). The sleep selects on it, with no goroutine between
// the close and the sleeper. ks.mu is held.
func (ks *keyState) pauseWake() <-chan struct{} {
	if ks.wake == nil {
		ks.wake = make(chan struct{})
	}
	return ks.wake
}

// wakeSleepers wakes the requests asleep in ks's queue, and those asleep
// to a turn taken ahead. ks.mu is held.
func (ks *keyState) wakeSleepers() {
	if ks.wake != nil {
		close(ks.wake)
		ks.wake = nil
	}
	if last := ks.last; last != nil {
		for q := last.next; ; q = q.next {
			q.wakeUp()
			if q == last {
				break
			}
		}
	}
}

// placeWake returns the channel that wakes the request of q, about to
// sleep to it: a pause or a lowered rate closes it (see wakeSleepers), as
// does a place given up ahead of q once q is first (see wakeFirst). ks.mu
// is held.
func (q *queuedPlace) placeWake() <-chan struct{} {
	if q.wake == nil {
		q.wake = make(chan struct{})
	}
	return q.wake
}

// wakeUp wakes q's request, if asleep. ks.mu is held.
func (q *queuedPlace) wakeUp() {
	q.moved = false
	if q.wake != nil {
		close(q.wake)
		q.wake = nil
	}
}

// wakeFirst wakes the request of the first place, if places given up
// ahead of it moved it up since it went to sleep (see closeUp): the
// places behind it are woken in turn, each as the one before it goes, so
// that a request given up wakes one request, not the whole queue. ks.mu
// is held.
func (ks *keyState) wakeFirst() {
	if ks.last != nil {
		if first := ks.last.next; first.moved {
			first.wakeUp()
		}
	}
}

// place is what a request keeps of its wait for a turn: its place in the
// key's queue, and the turn it took.
type place struct {
	// q is its place in the queue while it holds one (q.held); nil until
	// it first takes one, then kept for the next.
	q   *queuedPlace
	end int64 // the turn taken: when the bucket has refilled its tokens (see MemoryLimitStore.takeAt)
	// wake is closed when a pause or a lowered rate moves the place (see
	// pauseWake); nil when the request is not to sleep.
	wake <-chan struct{}
	// goAt is when the request goes, when an AheadLimitStore took its
	// turn ahead of its time; zero otherwise.
	goAt time.Time
}

// queuedPlace is a place in a key's queue, linked in the order the places
// were taken, so that a restart gives them new times in that order. It is
// made when a request first queues, so that a turn taken at once costs
// none. Its fields are guarded by the key's mu.
type queuedPlace struct {
	slot   time.Time      // when it asks the store, as the queue stood
	shift  time.Duration  // the key's shift when it was given slot
	gap    time.Duration  // the room it holds after slot
	gapBy  ThrottleReason // the bucket that sets gap
	toks   int64          // its request's tokens, of which restart makes its gap again
	latest time.Time      // the latest its request may go (MaxWait, its deadline)
	reason ThrottleReason
	held   bool // in the queue
	// moved is set when a place given up ahead moved q up (see closeUp),
	// its request asleep to where it was: it is woken once q is first.
	moved bool
	// wake is closed to wake q's request (see placeWake); nil until it
	// sleeps.
	wake chan struct{}
	// refused is set when a restart found the place's new slot beyond
	// latest and took it out of the queue: its request is refused as it
	// wakes (see turn), without holding a place the requests behind it
	// could use.
	refused bool
	// lined is set while q's request waits in line for an answer of the
	// requests asking the store (see keyState.asks), handed once one of
	// them handed it its ask: it asks next, or queues and hands it on.
	lined, handed bool
	prev, next    *queuedPlace
}

// queued reports whether p holds a place in its key's queue. ks.mu is held.
func (p *place) queued() bool { return p.q != nil && p.q.held }

// at is when p asks the store, the queue's moves since included. ks.mu is
// held.
func (p *place) at(ks *keyState) time.Time { return p.q.at(ks) }

func (q *queuedPlace) at(ks *keyState) time.Time { return q.slot.Add(ks.shift - q.shift) }

// ringPush puts q at the end of a ring of places, the queue or the line,
// whose last is *last (nil when empty; the last's next is the first).
func ringPush(last **queuedPlace, q *queuedPlace) {
	if *last == nil {
		q.prev, q.next = q, q
	} else {
		first := (*last).next
		q.prev, q.next = *last, first
		(*last).next, first.prev = q, q
	}
	*last = q
}

// ringRemove takes q out of the ring whose last is *last.
func ringRemove(last **queuedPlace, q *queuedPlace) {
	if q.next == q {
		*last = nil
	} else {
		q.prev.next, q.next.prev = q.next, q.prev
		if *last == q {
			*last = q.prev
		}
	}
	q.prev, q.next = nil, nil
}

// push puts q at the end of ks's queue. ks.mu is held.
func (ks *keyState) push(q *queuedPlace) {
	ringPush(&ks.last, q)
	q.held = true
	ks.waiting++
}

// remove takes q out of ks's queue. ks.mu is held.
func (ks *keyState) remove(q *queuedPlace) {
	ringRemove(&ks.last, q)
	q.held = false
	ks.waiting--
}

// waitInLine puts q at the end of ks's line. ks.mu is held.
func (ks *keyState) waitInLine(q *queuedPlace) {
	ringPush(&ks.line, q)
	q.lined = true
}

// leaveLine takes q out of ks's line, or hands on the ask it was handed.
// ks.mu is held.
func (ks *keyState) leaveLine(q *queuedPlace) {
	if q.handed {
		q.handed = false
		ks.passAsk()
	}
	if !q.lined {
		return
	}
	ringRemove(&ks.line, q)
	q.lined = false
}

// passAsk hands an ask of the key's, its answer back, to the first
// request in line, which it wakes, or ends it when nobody waits. ks.mu is
// held.
func (ks *keyState) passAsk() {
	if ks.line == nil {
		ks.asks--
		return
	}
	first := ks.line.next
	ks.leaveLine(first)
	first.handed = true
	first.wakeUp()
}

// key returns the state of the key req belongs to, made on first use.
// The key used last is found without a lock or a map lookup: most clients
// send to one model of one provider.
func (l *Limiter) key(req *http.Request, model string, free bool, now time.Time) *keyState {
	id := keyID{host: req.URL.Host, model: boundString(model), free: free}
	if l.cfg.Key != nil {
		id = keyID{host: boundString(l.cfg.Key(req, model)), free: free}
	}
	due := l.sweepDue(now)
	if ks := l.last.Load(); ks != nil && ks.id == id && !ks.dropped.Load() && !due {
		return ks
	}
	l.mu.RLock()
	ks := l.keys[id]
	l.mu.RUnlock()
	if ks == nil || due {
		ks = l.addKey(id, now)
	}
	if l.last.Load() != ks {
		l.last.Store(ks)
	}
	return ks
}

// sweepDue reports whether the idle keys are due to be swept at now.
func (l *Limiter) sweepDue(now time.Time) bool {
	next := l.nextSweep.Load()
	return next == nil || !now.Before(*next)
}

// addKey returns the state of key id, made if the Limiter has none, after
// sweeping the idle keys if due. While a sweep runs, a key the Limiter
// holds is returned at once, as if found just before the sweep; a new one
// waits for the sweep, as it would for l.mu.
func (l *Limiter) addKey(id keyID, now time.Time) *keyState {
	for {
		l.mu.RLock()
		ks, sweeping := l.keys[id], l.sweeping
		l.mu.RUnlock()
		if ks != nil && (sweeping != nil || !l.sweepDue(now)) {
			return ks
		}
		if sweeping != nil {
			<-sweeping
			continue
		}
		if ks = l.keyOrSweep(id, now); ks != nil {
			return ks
		}
	}
}

// keyOrSweep is addKey under l.mu: it returns nil after a sweep, or while
// one runs, and the caller asks again.
func (l *Limiter) keyOrSweep(id keyID, now time.Time) *keyState {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.sweeping != nil {
		return l.keys[id]
	}
	if l.sweepDue(now) {
		l.sweepApart(now, l.cfg.IdleTTL)
		next := now.Add(max(l.cfg.IdleTTL/4, time.Second))
		l.nextSweep.Store(&next)
		l.crowd = max(2*len(l.keys), crowdedKeys)
		return nil
	}
	ks := l.keys[id]
	if ks == nil {
		if len(l.keys) >= l.crowd {
			// Keys pile up, as when a caller names a new model in every
			// request (a gateway's tenant names the model): those idle for
			// a second that hold nothing to remember go now, not after
			// IdleTTL. At most once per doubling of the keys, so that the
			// sweeps cost a few steps per key made.
			l.sweepApart(now, min(crowdedIdle, l.cfg.IdleTTL))
			l.crowd = max(2*len(l.keys), crowdedKeys)
			return nil
		}
		name := id.host
		if l.cfg.Key == nil {
			name = id.host + " " + id.model
		}
		if id.free {
			name += " free"
		}
		ks = &keyState{id: id, name: name, rate: l.cfg.RequestsPerSecond, born: now, l: l}
		ks.stored.own = &ks.own
		ks.lastSent.Store(math.MinInt64) // never
		ks.lane.Store(math.MinInt64)     // open: nobody is queued
		l.keys[id] = ks
	}
	return ks
}

// crowdedKeys is the fewest keys from which a new key sweeps the keys idle
// for crowdedIdle, before IdleTTL (see addKey).
const crowdedKeys = 1024

// crowdedIdle is how long a key is idle before a sweep of crowded keys
// drops it: a key idle that long has no requests in its send rate's
// window (rateWindow) either.
const crowdedIdle = rateWindow

// sweep drops the keys idle for idleFor whose state is that of a new key:
// nobody queued, no pause, the rate recovered. A request that looked its key
// up just before may still use the dropped state: the store keeps the
// buckets right, and what its answer says goes to the key (see held).
// A dropped key's request count moves to the Limiter's (see count), and
// the Limiter's own store unpins its state (see MemoryLimitStore.unpin).
// l.mu is held, for the whole sweep (see sweepApart).
func (l *Limiter) sweep(now time.Time, idleFor time.Duration) {
	for _, ks := range l.keys {
		if now.Sub(ks.used()) < idleFor {
			continue // used lately: kept, without its lock
		}
		l.sweepKey(ks, now, idleFor)
	}
}

// sweepApart is sweep without holding l.mu for the whole of it, over more
// than a chunk of keys: it finds the keys idle for idleFor under the read
// lock, without their locks, then checks each again and drops it, a chunk
// at a time, under the write lock, so that a key used in between is kept
// and requests to the others wait for a chunk, not for the whole sweep.
// New keys wait for it (see l.sweeping). l.mu is held, and is again on
// return.
func (l *Limiter) sweepApart(now time.Time, idleFor time.Duration) {
	if len(l.keys) <= sweepChunk {
		l.sweep(now, idleFor)
		return
	}
	sweepInChunks(&l.mu, &l.sweeping, l.found, l.keys,
		func(ks *keyState) bool { return now.Sub(ks.used()) >= idleFor },
		func(ks *keyState) keyID { return ks.id },
		func(ks *keyState) { l.sweepKey(ks, now, idleFor) })
}

// sweepKey drops ks if it has been idle for idleFor with the state of a
// new key. l.mu is held.
func (l *Limiter) sweepKey(ks *keyState, now time.Time, idleFor time.Duration) {
	ks.lock()
	l.recover(ks, now)
	idle := now.Sub(ks.used()) >= idleFor && ks.waiting == 0 && !ks.adapting &&
		!ks.next.After(now) && !ks.paused.After(now)
	ks.unlock()
	if idle {
		ks.dropped.Store(true)
		delete(l.keys, ks.id)
		l.requests.Add(ks.requests.Swap(0))
		if l.own != nil {
			l.own.unpin(ks.name, &ks.stored, &ks.own)
		}
	}
}

// held returns the state l holds of ks's key: ks, unless a sweep dropped
// it while its request ran, then the key's state now, made again if need
// be. A sweep of crowded keys drops a key idle for a second, less than
// many answers take: what such an answer says (a pause, a lowered rate)
// is for the key, not for a state nobody reads again.
func (l *Limiter) held(ks *keyState, now time.Time) *keyState {
	if !ks.dropped.Load() {
		return ks
	}
	return l.addKey(ks.id, now)
}

// count counts a request of ks. One that counts in ks after a sweep
// dropped it moves ks's count to the Limiter's, as the sweep did: either
// the sweep took the request's count, or the request sees it swept.
func (l *Limiter) count(ks *keyState) {
	ks.requests.Add(1)
	if ks.dropped.Load() {
		l.countSwept(ks)
	}
}

// countSwept moves the count of ks, swept, to the Limiter's: a call of its
// own, so that count is inlined.
func (l *Limiter) countSwept(ks *keyState) {
	l.mu.Lock() // Stats sees the count in ks, or in l, never in neither
	l.requests.Add(ks.requests.Swap(0))
	l.mu.Unlock()
}

// lock takes ks.mu, closing the lane, and waits for the requests that
// found it open to record their turns (see takeFast): a decrease of the
// rate, or a place in the queue, then counts from the last request sent.
// Their wait is short and takes no lock of the Limiter's.
func (ks *keyState) lock() {
	ks.mu.Lock()
	ks.lane.Store(math.MaxInt64)
	for ks.fast.Load() != 0 {
		runtime.Gosched()
	}
}

// unlock opens the lane, from the queue's next place, when nobody holds a
// place and the rate is not lowered, and releases ks.mu.
func (ks *keyState) unlock() {
	if ks.waiting == 0 && !ks.adapting {
		ks.lane.Store(ks.since(ks.next))
	}
	ks.mu.Unlock()
}

// used returns when ks was used last: a turn asked under mu (lastUsed), or
// one taken by takeFast (lastSent), which thus writes one word the less on
// a line every core shares.
func (ks *keyState) used() time.Time {
	return ks.at(max(ks.lastUsed.Load(), ks.lastSent.Load()))
}

// since returns t in nanoseconds since ks.born, and at the reverse.
func (ks *keyState) since(t time.Time) int64 { return int64(t.Sub(ks.born)) }

func (ks *keyState) at(ns int64) time.Time { return ks.born.Add(time.Duration(ns)) }

// limit is the requests bucket in force. ks.mu is held.
func (ks *keyState) limit(burst int) BucketLimit {
	if ks.rate == 0 {
		return BucketLimit{}
	}
	return BucketLimit{Rate: ks.rate, Burst: int64(burst)}
}

// restart starts the queue again at from, not before now: a pause or a
// lowered rate moved it. The places held keep their order: they are given
// new slots in the order they were taken, so that the requests that
// waited longest go first, each a gap after the one before at the rate at
// its slot: a queue a decrease moves whole would otherwise go at the
// lowered rate to its end, while the rate recovers. Each waits for the
// bucket that sets the gap of the place before it, as enqueue records
// (see queueBy): a request of few tokens behind one of many waits for the
// tokens bucket, whatever its own gap. A place whose new slot
// is beyond what its request may wait is taken out, and those behind it
// move up. The requests asleep are woken now (see pauseWake): those taken
// out are refused at once, not once they have slept to the place they
// had, and the others sleep again, to their new places, ahead of any
// request that queues after them. ks.mu is held.
func (ks *keyState) restart(now, from time.Time) {
	ks.next, ks.nextTokens = from, false
	if last := ks.last; last != nil {
		slot := maxTime(now, from)
		var aheadBy ThrottleReason // the bucket of the gap of the place held ahead
		for q := last.next; ; {
			next, end := q.next, q == last
			gap, gapBy := ks.l.gapAt(ks.l.rateAt(ks, slot), q.toks)
			waitBy := aheadBy
			if waitBy == "" {
				waitBy = gapBy // nobody ahead: its own, as queueBy names it
			}
			q.slot, q.shift, q.reason = slot, ks.shift, reason(ks, now, "", waitBy)
			q.wakeUp()
			if slot.After(q.latest) {
				ks.remove(q)
				q.refused = true
			} else {
				q.gap, q.gapBy = gap, gapBy
				slot = slot.Add(gap)
				ks.next, ks.nextTokens = slot, gapBy == ThrottleTokens
				aheadBy = gapBy
			}
			if end {
				break
			}
			q = next
		}
	}
	ks.wakeSleepers()
}

// pauseUntil records a pause ending at until, later than any ks knew, at
// now: the queue starts again when it ends. ks.mu is held.
func (ks *keyState) pauseUntil(now, until time.Time) {
	ks.paused = until
	from := until
	if ks.adapting {
		// While the rate is lowered the key sends no bursts (see
		// sent): a pause shorter than the lowered interval ends
		// where the decrease started the queue, not before.
		from = maxTime(from, ks.at(ks.lastSent.Load()).Add(BucketLimit{Rate: ks.rate}.interval()))
	}
	ks.restart(now, from)
}

// leave gives up p's place, as its request will not be sent.
func (ks *keyState) leave(p *place) {
	ks.lock()
	ks.leaveLocked(p)
	ks.unlock()
}

// leaveLocked gives up p's place; the last place of the queue is given back
// for the next request to take, another to the places behind it (see
// closeUp). ks.mu is held.
func (ks *keyState) leaveLocked(p *place) {
	if q := p.q; q != nil && (q.lined || q.handed) {
		ks.leaveLine(q)
	}
	if !p.queued() {
		return
	}
	q := p.q
	if at := q.at(ks); q == ks.last && ks.next.Equal(at.Add(q.gap)) {
		ks.next, ks.nextTokens = at, q.reason == ThrottleTokens // what q waited for
	} else if q != ks.last {
		ks.closeUp(q)
	}
	ks.remove(q)
	ks.wakeFirst()
	if ks.waiting == 0 {
		// Nobody holds a place: the places given up before the last were
		// nobody's either. The queue starts again a gap after the last
		// request sent (its requests' or tokens' gap, the longer), or when
		// the pause ends.
		gap, interval := time.Duration(ks.lastGap.Load()), BucketLimit{Rate: ks.rate}.interval()
		if last := maxTime(ks.paused, ks.at(ks.lastSent.Load()).Add(max(gap, interval))); last.Before(ks.next) {
			ks.next, ks.nextTokens = last, gap > interval
		}
	}
}

// closeUp moves the places behind q, whose request gives it up, up by the
// room q held, so that its turn goes to the request behind it rather than
// to nobody: a queue that never empties would otherwise run below its rate
// by every request that gave up in the middle of it. They keep their
// order and their gaps. Their requests, asleep, are woken to sleep less
// one by one, the first at once, each of the others as the one before it
// goes (see wakeFirst): the place ahead goes no later than the new one
// behind it, and waking the whole queue for each request given up cost a
// queue of 1,000 ten times the CPU of its sends. The place right behind q
// now waits for what q waited for, which may be another bucket than its
// own (see queueBy). ks.mu is held.
func (ks *keyState) closeUp(q *queuedPlace) {
	q.next.reason = q.reason
	for r := q.next; ; r = r.next {
		r.slot = r.slot.Add(-q.gap)
		r.moved = true
		if r == ks.last {
			break
		}
	}
	ks.next = ks.next.Add(-q.gap)
}

// acceptRate is the rate at which the provider accepted ks's requests
// over the last rateWindow (or since ks was made, when younger), in
// requests per second: those sent less those refused with a 429. 0 means
// unknown. ks.mu is held.
func (ks *keyState) acceptRate(now time.Time) float64 {
	span := min(now.Sub(ks.born), rateWindow)
	if span <= 0 {
		return 0
	}
	age := now.Sub(ks.born)
	return max(ks.sends.count(age)-ks.refused.count(age), 0) / span.Seconds()
}

// windowCount counts events over a sliding rateWindow, approximated by two
// fixed windows: the current one, and the one before counted for the part
// of it still within rateWindow. Times are given since the count's origin
// (its owner's birth), from which the windows are counted. Each window is
// one word, its number (the low 32 bits of it) and its count, so that
// events are counted without a lock. The zero value counts from zero.
type windowCount struct {
	windows [2]atomic.Uint64
}

// window returns the number of the window since falls in, and how far
// into it.
func window(since time.Duration) (uint32, time.Duration) {
	since = max(since, 0)
	return uint32(since / rateWindow), since % rateWindow
}

func (w *windowCount) add(since time.Duration) {
	i, _ := window(since)
	c := &w.windows[i&1]
	for {
		old := c.Load()
		var n uint64
		switch d := int32(i - uint32(old>>32)); {
		case d == 0:
			n = old + 1
		case d > 0: // a new window
			n = uint64(i)<<32 | 1
		default: // older than the windows counted
			return
		}
		if c.CompareAndSwap(old, n) {
			return
		}
	}
}

// remove takes back an event added at since, while its window is one of
// those kept and counts it.
func (w *windowCount) remove(since time.Duration) {
	i, _ := window(since)
	c := &w.windows[i&1]
	for {
		old := c.Load()
		if uint32(old>>32) != i || old&math.MaxUint32 == 0 {
			return
		}
		if c.CompareAndSwap(old, old-1) {
			return
		}
	}
}

func (w *windowCount) count(since time.Duration) float64 {
	i, into := window(since)
	return float64(w.n(i)) + float64(w.n(i-1))*float64(rateWindow-into)/float64(rateWindow)
}

// clear forgets every event counted so far.
func (w *windowCount) clear() {
	for i := range w.windows {
		w.windows[i].Store(0)
	}
}

// n returns the count of window i, 0 when it is not one of the two kept.
func (w *windowCount) n(i uint32) uint64 {
	if c := w.windows[i&1].Load(); uint32(c>>32) == i {
		return c & math.MaxUint32
	}
	return 0
}

// takeFast takes ks's turn at now without ks.mu when the lane is open:
// nobody holds a place in the queue, the rate is not lowered, and nobody
// holds mu. turn would then ask the store at once, and the Limiter's own
// store takes the turn without its lock either. It reports false, having
// taken nothing, when turn is to decide: the lane is closed, the store is
// not the Limiter's own, or it refused; true with the store's end of the
// turn (see MemoryLimitStore.takeAt).
func (l *Limiter) takeFast(ks *keyState, toks int64, now time.Time) (int64, bool) {
	since := ks.since(now)
	if since < ks.lane.Load() || !l.ownStore() {
		return noEnd, false
	}
	// Counted, then the lane read again: a lock that closes the lane
	// after this read waits until the turn is recorded (see lock), and
	// once it is closed no request is counted that would hold a lock up.
	// Uncounted on every return, without a defer: nothing below panics.
	ks.fast.Add(1)
	if since < ks.lane.Load() {
		ks.fast.Add(-1)
		return noEnd, false
	}
	wait, _, end, err := l.own.takeAt(now, ks.name, &ks.stored, &l.reqs, &l.toks, toks)
	if err != nil || wait > 0 {
		ks.fast.Add(-1)
		return noEnd, false
	}
	ks.lastSent.Store(since)
	// The gap's, at the rate not lowered: most often the value already
	// there, which storing again would only write on the shared line.
	if g := int64(max(times(toks, l.toks.every), l.reqs.every)); ks.lastGap.Load() != g {
		ks.lastGap.Store(g)
	}
	ks.sends.add(time.Duration(since))
	ks.fast.Add(-1)
	return end, true
}

// turn is one step of a request's wait for its turn: it returns 0 when the
// request took its turn (it may be sent now), or how long to wait before the
// next step and why (no reason: it waits in line for another's answer).
//
// A request that finds nobody queued asks the store at once, or, while
// as many as the buckets could grant do so with a store the config names,
// waits in line for an answer (see keyState.asks). Otherwise, or
// when the store refuses, it takes the key's next place in the queue: no
// earlier than the store said, and a gap (the time its request and tokens
// take to refill at the key's rate) after the place before. At its place it
// asks the store. A store that still refuses is behind the queue (another
// process took the turn, or a timer woke this request late): the request
// keeps its place, and the whole queue moves back by as much, so that the
// requests behind it do not each ask in vain. A lower rate or a pause
// moves the places, in their order (see restart).
//
// A request whose place would come later than allowed (MaxWait, or its
// deadline) takes none: it is refused, and a place given up behind others
// would leave a gap nobody fills.
func (l *Limiter) turn(ctx context.Context, ks *keyState, p *place, toks int64, now time.Time, allowed time.Duration) (time.Duration, ThrottleReason, error) {
	ks.lock()
	if !p.goAt.IsZero() {
		wait, by, held := l.heldAhead(ks, p, toks, now)
		ks.unlock()
		if held {
			return wait, by, nil
		}
		l.dropAhead(ctx, ks, p, toks)
		now = l.now()
		ks.lock()
	}
	ks.lastUsed.Store(ks.since(now))
	l.recover(ks, now)
	// asker is set while the request holds one of the key's asks (see
	// keyState.asks); alone when it waited in line all it may wait, and
	// asks beside the others.
	asker, alone := false, false
	if q := p.q; q != nil && (q.handed || q.lined) {
		asker, alone = q.handed, q.lined
		q.handed = false
		ks.leaveLine(q)
	}
	if q := p.q; q != nil && q.refused {
		// A restart took its place out, the place it would have had
		// being beyond what it may wait.
		q.refused = false
		if wait := q.slot.Sub(now); wait > allowed {
			if asker {
				ks.passAsk()
			}
			ks.unlock()
			return wait, q.reason, nil
		}
	}
	if asker && (p.queued() || ks.next.After(now)) {
		// The request that asked before it was refused, and queued: this
		// one queues behind it, and hands the ask on.
		ks.passAsk()
		asker = false
	}
	if !p.queued() && ks.next.After(now) {
		if wait := ks.next.Sub(now); wait > allowed {
			by := reason(ks, now, "", l.queueBy(ks))
			ks.unlock()
			return wait, by, nil
		}
		l.enqueue(ks, p, now, toks, "", now.Add(allowed))
	}
	if p.queued() {
		if at := p.at(ks); at.After(now) {
			p.wake = p.q.placeWake()
			by := p.q.reason
			ks.unlock()
			return at.Sub(now), by, nil
		}
	}
	if !asker && !p.queued() && !l.ownStore() {
		// A crowd arriving together would otherwise all ask the store
		// (across a network) at once, most of them to be refused and
		// queued: as many ask as the buckets could grant, the others
		// wait in line for an answer, as long as they may wait, then ask
		// or queue in their order.
		switch full := ks.line != nil || int(ks.asks) >= l.askers(ks, toks); {
		case !full:
			asker = true
			ks.asks++
		case !alone && allowed > 0:
			q := p.q
			if q == nil {
				q = new(queuedPlace)
				p.q = q
			}
			q.toks, q.latest = toks, now.Add(allowed)
			ks.waitInLine(q)
			p.wake = q.placeWake()
			ks.unlock()
			return allowed, "", nil
		}
		// Or it may not wait in line, and asks beside the others.
	}
	// As far ahead as the store's round trip (see AheadLimitStore): an
	// ask that reached it that much early is not a round trip lost. A
	// store in this process, whose round trip is next to none, takes
	// turns as TakeTurn does.
	ahead := min(l.roundTrip(), allowed)
	wait, by, end, now, err := l.take(ctx, ks, toks, now, ahead)
	defer ks.unlock()
	if asker {
		defer ks.passAsk() // before the unlock
	}
	if until := now.Add(wait); by == ThrottlePaused && until.After(ks.paused) {
		// A pause another process sharing the store heard of moves the
		// places, as a pause heard here does: the requests asleep are
		// woken, and refused now, by the pause, if it ends beyond what
		// they may wait; this one, its place moved too, sleeps again
		// below, or is refused.
		ks.pauseUntil(now, until)
	}
	switch {
	case err != nil:
		ks.leaveLocked(p)
		return 0, "", err
	case wait == 0:
		l.sent(ks, p, now, toks)
		p.end = end
		return 0, "", nil
	case by == "" && l.ahead != nil:
		// Taken ahead of its time: the request goes at it.
		l.sent(ks, p, now.Add(wait), toks)
		p.end, p.goAt, p.wake = end, now.Add(wait), ks.pauseWake()
		_, gapBy := l.gap(ks, toks)
		return wait, gapBy, nil
	case p.queued():
		// Asked again a round trip ahead of its time (see
		// AheadLimitStore), it is taken ahead of it then, not a round
		// trip late. A turn refused within ahead is one the store does
		// not take ahead (a pause, redisguard's local share): asked
		// again at its time, not at once.
		var lead time.Duration
		if wait > ahead {
			lead = min(l.roundTrip(), ahead)
		}
		ks.lateBy(p.q, now.Add(wait-lead))
		p.q.reason = by
	default:
		if slot := maxTime(now.Add(wait), ks.next); slot.Sub(now) > allowed {
			_, gapBy := l.gap(ks, toks)
			return slot.Sub(now), reason(ks, now.Add(wait), by, gapBy), nil
		}
		l.enqueue(ks, p, now.Add(wait), toks, by, now.Add(allowed))
		if asker {
			l.queueLine(ks, now)
		}
	}
	p.wake = p.q.placeWake()
	return p.at(ks).Sub(now), p.q.reason, nil
}

// queueLine gives the requests in ks's line, which would each queue in
// turn behind the request the store just refused, their places at once,
// in their order, and wakes them to sleep to their places: a place beyond
// what its request may wait is refused as a restart refuses it. ks.mu is
// held.
func (l *Limiter) queueLine(ks *keyState, now time.Time) {
	for ks.line != nil {
		q := ks.line.next
		ks.leaveLine(q)
		q.wakeUp() // before enqueue, which makes q anew
		if slot := maxTime(now, ks.next); slot.After(q.latest) {
			q.slot, q.reason, q.refused = slot, reason(ks, now, "", l.queueBy(ks)), true
		} else {
			l.enqueue(ks, &place{q: q}, now, q.toks, "", q.latest)
		}
	}
}

// askers is how many requests of ks that found nobody queued ask the store
// at once, at most: as many as its buckets could grant, toks tokens each,
// within the store's round trip, their bursts and what they refill
// meanwhile; one at least. ks.mu is held.
func (l *Limiter) askers(ks *keyState, toks int64) int {
	burst := l.cfg.Burst
	if l.fleet != nil && ks.adapting {
		burst = 1 // see take
	}
	rtt := l.roundTrip().Seconds()
	n := float64(maxAskers)
	if r := ks.limit(burst); r.Rate > 0 {
		n = float64(r.Burst) + r.Rate*rtt
	}
	if t := l.toks.BucketLimit; t.Rate > 0 && toks > 0 {
		n = min(n, (float64(t.Burst)+t.Rate*rtt)/float64(toks))
	}
	return int(min(math.Ceil(n)+1, maxAskers))
}

// maxAskers bounds askers, and keyState.asks.
const maxAskers = math.MaxInt16

// heldAhead is turn for a request holding a turn the store took ahead of
// its time (see AheadLimitStore): the request goes at it, and not before,
// woken meanwhile by a pause. A pause heard since, that ends after the
// turn, takes it from the request, which reports false, p still holding
// the turn for the caller to give back (see dropAhead), and waits for the
// pause's end as a queued request does: the turn goes to nobody, and the
// store admits a little less, never more. ks.mu is held.
func (l *Limiter) heldAhead(ks *keyState, p *place, toks int64, now time.Time) (time.Duration, ThrottleReason, bool) {
	if ks.paused.After(p.goAt) {
		return 0, "", false
	}
	wait := p.goAt.Sub(now)
	if wait <= 0 {
		p.goAt = time.Time{}
		return 0, "", true
	}
	p.wake = ks.pauseWake()
	_, gapBy := l.gap(ks, toks)
	return wait, gapBy, true
}

// dropAhead gives up the turn p holds, taken ahead of its time (see
// AheadLimitStore), which its request will not use: its context ended
// before it, a pause heard since took it (see heldAhead), or it is beyond
// what the request may wait. The turn's tokens go back to the store's
// tokens bucket, which gives back only what it still owes of them (see
// TurnLimitStore): none of them was used, and the key's token budget
// would otherwise lose them. The requests bucket's turn stays spent (a
// store gives no turn back), as does its spacing of the queue (lastSent).
// The request, counted as sent at its turn (see sent), is no longer: the
// rate the provider accepted (see acceptRate) counts only those sent.
// ks.mu is not held: the store may be across a network.
func (l *Limiter) dropAhead(ctx context.Context, ks *keyState, p *place, toks int64) {
	if p.goAt.IsZero() {
		return
	}
	ks.sends.remove(p.goAt.Sub(ks.born))
	end := p.end
	p.goAt, p.end = time.Time{}, noEnd
	if toks <= 0 {
		return
	}
	// The request is over, or waits on: its context may be done, and the
	// credit is still due. The store bounds its own time.
	if err := l.ahead.CreditTurn(context.WithoutCancel(ctx), ks.name, l.toks.BucketLimit, end, toks); err != nil {
		l.storeErrors.Add(1)
	}
}

// measured records a round trip of the AheadLimitStore: the last one,
// and their mean smoothed as TCP smooths its (RFC 6298's gain of 1/8).
// Lost updates of the mean, by asks answered at once, only make it a
// little less smooth.
func (l *Limiter) measured(rtt time.Duration) {
	rtt = max(rtt, 0)
	l.rtt.Store(int64(rtt))
	if s := l.srtt.Load(); s > 0 {
		l.srtt.Store(s + (int64(rtt)-s)/8)
	} else {
		l.srtt.Store(int64(rtt))
	}
}

// roundTrip is how far ahead the Limiter asks its AheadLimitStore: the
// lesser of the last round trip and the smoothed one, so that it follows
// a store that answers quicker at once, and one slow answer (a call that
// waited out a failover's Timeout) does not make the asks after it take
// turns that far ahead: a turn taken ahead is lost to all when its
// request is canceled before it.
func (l *Limiter) roundTrip() time.Duration {
	return time.Duration(min(l.rtt.Load(), l.srtt.Load()))
}

// lateBy moves q, whose request the store told to wait until at, there,
// and the places behind it as far as they must be to stay a gap behind
// it: the whole queue moves back by as much when q is first and the
// places behind it are where it left them. A place behind q that went
// first (it asked while q's ask was out, or q's timer woke late) took a
// gap of what q is late by: moving the others by all of it would leave
// that gap a hole nobody fills. ks.mu is held.
func (ks *keyState) lateBy(q *queuedPlace, at time.Time) {
	behind := at.Sub(q.at(ks))
	if behind <= 0 {
		return
	}
	end := at.Add(q.gap) // where the places behind q may start
	d := end.Sub(ks.next)
	if q != ks.last {
		d = end.Sub(q.next.at(ks))
	}
	if d > 0 {
		ks.shift += d
		ks.next = ks.next.Add(d)
	}
	q.slot, q.shift = at, ks.shift
}

// take asks the store for ks's turn, at now. It returns the store's
// answer (with the end of a turn taken, see MemoryLimitStore.takeAt and
// TurnLimitStore) and the time its wait counts from. ks.mu is held, and released
// while a store the config names is asked (it may be across a network);
// the Limiter's own store, in memory, is asked under it and given the
// reading now, while another store reads its own clock, a moment after
// now, so that a place counted from now would come early.
func (l *Limiter) take(ctx context.Context, ks *keyState, toks int64, now time.Time, ahead time.Duration) (time.Duration, ThrottleReason, int64, time.Time, error) {
	burst := l.cfg.Burst
	if l.fleet != nil && ks.adapting {
		// While the rate is lowered, the key sends no bursts (see sent):
		// the processes of a fleet would otherwise send one each.
		burst = 1
	}
	reqs := ks.limit(burst)
	if l.ownStore() {
		rb := reqs.bucket()
		wait, by, end, err := l.own.takeAt(now, ks.name, &ks.stored, &rb, &l.toks, toks)
		return wait, by, end, now, err
	}
	ks.unlock()
	var wait time.Duration
	var by ThrottleReason
	var err error
	end := noEnd
	if l.ahead != nil {
		wait, by, end, err = l.ahead.TakeTurnAhead(ctx, ks.name, reqs, l.toks.BucketLimit, toks, ahead)
		if by == "" && wait < 0 {
			wait = 0
		}
	} else if l.turns != nil {
		wait, by, end, err = l.turns.TakeTurn(ctx, ks.name, reqs, l.toks.BucketLimit, toks)
	} else {
		wait, by, err = l.cfg.Store.Take(ctx, ks.name, reqs, l.toks.BucketLimit, toks)
	}
	var ar AdaptiveRate
	var arErr error
	if l.fleet != nil && err == nil {
		ar, arErr = l.fleet.AdaptiveRate(ctx, ks.name)
	}
	if wait > 0 || l.fleet != nil || l.ahead != nil {
		asked := now
		now = l.now()
		if l.ahead != nil && err == nil {
			l.measured(now.Sub(asked))
		}
	}
	ks.lock()
	if arErr != nil {
		l.storeErrors.Add(1)
	} else if l.fleet != nil && err == nil {
		l.adopt(ks, ar, now)
	}
	return wait, by, end, now, err
}

// reason is why a place not before at is where it is: by, when the store
// said; otherwise a pause, or gapBy, the bucket that sets the gap. ks.mu
// is held.
func reason(ks *keyState, at time.Time, by, gapBy ThrottleReason) ThrottleReason {
	switch {
	case by != "":
		return by
	case at.Before(ks.paused):
		return ThrottlePaused
	}
	return gapBy
}

// enqueue gives p, which holds no place, the key's next place, not
// before at, for a request that may go until latest. The place's gap is at
// the rate the key has at its slot, as restart spaces the places it
// moves: while the rate recovers, the rate in force now is the lowest the
// queue will see, and a long queue spaced at it would lag the curve by
// its whole length. ks.mu is held.
func (l *Limiter) enqueue(ks *keyState, p *place, at time.Time, toks int64, by ThrottleReason, latest time.Time) {
	slot := maxTime(at, ks.next)
	gap, gapBy := l.gapAt(l.rateAt(ks, slot), toks)
	waitBy := gapBy
	if slot.After(at) {
		waitBy = l.queueBy(ks)
	}
	q := p.q
	if q == nil {
		q = new(queuedPlace)
		p.q = q
	}
	*q = queuedPlace{slot: slot, shift: ks.shift, gap: gap, gapBy: gapBy, toks: toks, latest: latest, reason: reason(ks, at, by, waitBy)}
	ks.push(q)
	ks.next, ks.nextTokens = slot.Add(gap), gapBy == ThrottleTokens
}

// queueBy is the bucket a request that takes the key's next place, ahead
// of now, waits for: the one that set the gap of the last place held, as
// the queue ahead of it waits for that bucket, whatever its own tokens
// would take; with nobody queued, the one that set the gap after the last
// request (see nextTokens). ks.mu is held.
func (l *Limiter) queueBy(ks *keyState) ThrottleReason {
	switch {
	case ks.last != nil:
		return ks.last.gapBy
	case ks.nextTokens:
		return ThrottleTokens
	}
	return ThrottleRequests
}

// gap is the room a request with toks tokens takes in ks's queue: the time
// its request and its tokens take to refill at the limits in force, and
// which bucket sets it.
func (l *Limiter) gap(ks *keyState, toks int64) (time.Duration, ThrottleReason) {
	return l.gapAt(ks.rate, toks)
}

// gapAt is gap at the request rate rate.
func (l *Limiter) gapAt(rate float64, toks int64) (time.Duration, ThrottleReason) {
	reqs := BucketLimit{Rate: rate}.interval()
	if t := times(toks, l.toks.every); t > reqs {
		return t, ThrottleTokens
	}
	return reqs, ThrottleRequests
}

// rateAt is the request rate of ks at t, which is not before the last
// decrease: the rate in force, or, while it is lowered, the rate it will
// have recovered to by then (see recover). ks.mu is held.
func (l *Limiter) rateAt(ks *keyState, t time.Time) float64 {
	if !ks.adapting {
		return ks.rate
	}
	return min(l.cubic(ks.wmax, t.Sub(ks.lastDecrease)), l.cfg.RequestsPerSecond)
}

// sent records that a request of ks took its turn at now. ks.mu is held.
func (l *Limiter) sent(ks *keyState, p *place, now time.Time, toks int64) {
	gap, gapBy := l.gap(ks, toks)
	ks.lastSent.Store(ks.since(now))
	ks.lastGap.Store(int64(gap))
	ks.sends.add(now.Sub(ks.born))
	if q := p.q; p.queued() {
		// Its place already spaced the next one: counting from now, which
		// a timer wakes a little late, would slow the queue down.
		if at := q.at(ks); at.After(now) && ks.last.next == q {
			// A restart moved the first place while its request asked a
			// store the config names, which let it go: the places behind
			// move up to the one it had, a gap after now at least, and
			// their requests, asleep, are woken to sleep less.
			d := min(q.gap, at.Sub(now))
			ks.shift -= d
			ks.next = ks.next.Add(-d)
			ks.wakeSleepers()
		}
		ks.remove(q)
		ks.wakeFirst()
	} else if q != nil && q.refused {
		// A restart took its place out (beyond what it may wait) while
		// its request asked a store the config names, which let it go:
		// the places behind moved up into its slot as if it would not be
		// sent. The queue goes back to a gap after now, at the rate in
		// force, as it would behind a place it held.
		q.refused = false
		if ks.last != nil {
			if d := now.Add(gap).Sub(ks.last.next.at(ks)); d > 0 {
				ks.shift += d
				ks.next = ks.next.Add(d)
			}
		}
		ks.nextAfter(now.Add(gap), gapBy)
	} else if ks.adapting {
		// While the rate is lowered, the key sends no bursts.
		ks.nextAfter(now.Add(gap), gapBy)
	}
}

// nextAfter moves ks's next place to t, a gap set by the bucket by after
// a request sent, when t is later. ks.mu is held.
func (ks *keyState) nextAfter(t time.Time, by ThrottleReason) {
	if t.After(ks.next) {
		ks.next, ks.nextTokens = t, by == ThrottleTokens
	}
}

// pause stops ks until until: here, by voiding the queue's places so that
// it starts again, at the key's rate, when the pause ends; in the store,
// for the processes sharing it.
func (l *Limiter) pause(ctx context.Context, ks *keyState, now, until time.Time) {
	if !until.After(now) {
		return
	}
	ks.lock()
	later := until.After(ks.paused)
	if later {
		ks.pauseUntil(now, until)
	}
	ks.unlock()
	if !later {
		return
	}
	d := until.Sub(now)
	// The provider asked the account to stop, whatever becomes of the
	// request that heard it: its context may end as the answer comes
	// back, and the pause is still due in every process sharing the
	// store, which bounds its own time.
	if err := l.cfg.Store.Pause(context.WithoutCancel(ctx), ks.name, d); err != nil {
		l.storeErrors.Add(1)
	}
	l.serverPauses.Add(1)
	l.event(ThrottleEvent{Key: ks.name, Reason: ThrottleServerPause, Wait: d})
}

// slowDown lowers ks's rate after a 429 to a request sent at sentAt, when
// the key's 429s are more than tolerated429Share of its requests, once
// per round: a 429 to a request sent before the last decrease met a server
// still full of traffic sent at the old rate, and counting it again would
// collapse the rate (TCP, likewise, reacts once per round trip). The cut is
// from the rate the key was really accepted at, when lower than its rate
// (AWS SDK's adaptive mode), so that an idle key's high rate does not take
// several rounds of 429s to come down. With a store that keeps the rate for
// the fleet, the store judges the fleet's share, decides and counts (see
// AdaptiveLimitStore). It reports whether the 429 is taken for the rate's:
// beyond the tolerated share, or any 429 when the Limiter has no request
// rate to adapt.
func (l *Limiter) slowDown(ctx context.Context, ks *keyState, now, sentAt time.Time) (rates bool) {
	if l.cfg.RequestsPerSecond == 0 {
		return true
	}
	age := now.Sub(ks.born)
	ks.refused.add(age)
	refused, sent := ks.refused.count(age), ks.sends.count(age)
	beyond := refused > tolerated429Share*sent
	if l.fleet != nil {
		return l.slowDownFleet(ctx, ks, now, sentAt, beyond)
	}
	if !beyond {
		return false
	}
	a := l.cfg.Adaptive
	ks.lock()
	if sentAt.Before(ks.lastDecrease) {
		ks.unlock()
		return true
	}
	l.recover(ks, now)
	from := ks.rate
	if accepted := ks.acceptRate(now); accepted > 0 && accepted < from {
		from = accepted
	}
	// A key whose rate may not fall (adapts false) has no cut to follow:
	// each of its decisions is on its own share.
	if byChance(refused, sent, tolerated429Share, now.Sub(ks.lastDecrease)) || !l.adapts() && refused < chanceCut*tolerated429Share*sent {
		ks.refused.clear()
	}
	r := max(from*a.DecreaseFactor, a.MinRequestsPerSecond)
	ks.rate, ks.wmax, ks.lastDecrease, ks.adapting = r, from, now, true
	ks.restart(now, maxTime(ks.paused, ks.at(ks.lastSent.Load()).Add(BucketLimit{Rate: r}.interval())))
	ks.unlock()
	l.slowDowns.Add(1)
	l.event(ThrottleEvent{Key: ks.name, Reason: ThrottleSlowDown, Rate: r})
	return true
}

// slowDownFleet is slowDown with a store that keeps the fleet's rate: the
// store counts every 429, judges whether the fleet's are beyond the
// tolerated share, and cuts the rate once per round of the fleet. It
// reports the store's verdict, or alone, the key's own share in this
// process when the store fails: the verdict decides whether the 429
// pauses the key, which a failing store does not share anyway.
func (l *Limiter) slowDownFleet(ctx context.Context, ks *keyState, now, sentAt time.Time, alone bool) (beyond bool) {
	ks.lock()
	l.recover(ks, now)
	rate := ks.rate
	ks.unlock()
	// The request is over: its context may be done, and the count is
	// still due. The store bounds its own time.
	ar, beyond, err := l.fleet.SlowDown(context.WithoutCancel(ctx), ks.name, now.Sub(sentAt), rate, tolerated429Share)
	if err != nil {
		l.storeErrors.Add(1)
		return alone
	}
	ks.lock()
	cut := l.adopt(ks, ar, now)
	r := ks.rate
	ks.unlock()
	if cut {
		l.slowDowns.Add(1)
		l.event(ThrottleEvent{Key: ks.name, Reason: ThrottleSlowDown, Rate: r})
	}
	return beyond
}

// adopt takes the fleet's decrease ar, read at now, as ks's own when it is
// one ks has not seen, and reports whether it was. A store that dropped
// the key (a Redis restarted empty) counts its decreases from 1 again: a
// decrease of the number ks saw last is a new one when it was at another
// time, or when it still holds the rate down while ks has recovered. A
// rate that is not one (NaN or infinite, or below zero: a corrupted shared
// key) is a store error, not adopted: NaN, and the curve from an infinite
// rate, would make a bucket of no interval, which admits every request.
// ks.mu is held.
func (l *Limiter) adopt(ks *keyState, ar AdaptiveRate, now time.Time) bool {
	if ar.Decreases == 0 { // none, or the store dropped the key
		ks.seen = 0
		return false
	}
	if !(ar.From >= 0 && ar.From <= math.MaxFloat64) {
		l.storeErrors.Add(1)
		return false
	}
	at := now.Add(-ar.Since)
	if ar.Decreases == ks.seen && at.Sub(ks.lastDecrease).Abs() < sameDecrease &&
		(ks.adapting || l.cubic(ar.From, ar.Since) >= l.cfg.RequestsPerSecond) {
		return false
	}
	ks.seen = ar.Decreases
	ks.wmax, ks.lastDecrease, ks.adapting = ar.From, at, true
	l.recover(ks, now)
	ks.restart(now, maxTime(ks.paused, ks.at(ks.lastSent.Load()).Add(BucketLimit{Rate: ks.rate}.interval())))
	return true
}

// tolerated429Share is the share of 429s, among the requests of a key
// sent in the last second (this process's, or with an AdaptiveLimitStore
// the fleet's), that cuts no rate: a degraded
// provider answers a few requests 429 whatever the rate, and cutting on
// each of them, the next before the curve recovers, drove a key at 200/s
// down to ~48/s with 1% of them, ~12/s with 3%. A rate above the
// provider's draws a growing share, and is cut once it passes this one.
const tolerated429Share = 0.06

// chanceCut is how many times tolerated429Share the share of 429s that
// cut a key's rate must be for them to be kept after the cut. Random
// faults pass the tolerated share by chance now and then (a degraded
// provider's 3% of 200 requests a second, 6 on average, are more than 12
// about once in a hundred seconds' counts); with those 429s still counted
// for a second, against the fewer requests the lower rate sends, the next
// fault cut the rate again, and the next, down to ~10% of it: with 3% at
// random, over eight runs (seeds), a key at 200/s served 134/s on average,
// 39/s in the worst. A cut on a share below chanceCut times the tolerated
// one forgets its 429s, so that the next cut needs a share beyond of its
// own: 186/s on average, 167/s in the worst. A rate far above the
// provider's draws a share far beyond, whose 429s are kept, and the next
// 429 of the lowered rate cuts again at once, as before. But a key that
// ran at its rate when the provider's fell passes the share gradually,
// and cuts on a share just beyond it: see chanceCutSpacing.
const chanceCut = 2

// chanceCutSpacing is how long after a cut the next is no chance,
// whatever its share: a key that ran at its rate when the provider's
// fell passes the tolerated share gradually, each of its cuts on a share
// just beyond it, and the cuts that follow the first keep their 429s, so
// that the next round's 429 cuts again. Forgetting them too, each cut
// took another 6% of the last second's requests in 429s: a key at 200/s
// whose provider fell to 25/s drew 66 429s in the 10 s after, where 23
// had done before chance cuts forgot (bare 429s, simulated), 34 now.
// Chance cuts of a degraded provider come seconds apart; a whole
// rateWindow here took more of them for no chance at 4% of random 429s,
// and the rate served fell from 97/s to 80/s.
const chanceCutSpacing = rateWindow / 2

// byChance reports whether a cut on refused 429s of sent requests, a
// share beyond tolerated, sinceLast after the last cut, may be random
// faults passing the share by chance, whose 429s the cut forgets: a share
// under chanceCut times the tolerated one, no other cut within
// chanceCutSpacing before it.
func byChance(refused, sent, tolerated float64, sinceLast time.Duration) bool {
	return refused < chanceCut*tolerated*sent && sinceLast >= chanceCutSpacing
}

// sameDecrease is how far apart two readings of when one decrease was may
// be: a store across a network tells how long ago it was as of its reply,
// which takes up to a round trip to arrive.
const sameDecrease = time.Second

// recover moves an adapting key's rate along the CUBIC curve, never above
// the configured rate. ks.mu is held.
func (l *Limiter) recover(ks *keyState, now time.Time) {
	if !ks.adapting {
		return
	}
	r := l.cubic(ks.wmax, now.Sub(ks.lastDecrease))
	if r >= l.cfg.RequestsPerSecond {
		r, ks.adapting = l.cfg.RequestsPerSecond, false
	}
	ks.rate = r
}

// cubic is the rate d after a decrease from wmax: C·(d−K)³ + wmax, with
// K = ∛(wmax·(1−β)/C), at least MinRequestsPerSecond.
func (l *Limiter) cubic(wmax float64, d time.Duration) float64 {
	a := l.cfg.Adaptive
	if d <= 0 {
		return max(wmax*a.DecreaseFactor, a.MinRequestsPerSecond) // exactly, as slowDown cuts
	}
	k := math.Cbrt(wmax * (1 - a.DecreaseFactor) / a.RecoveryScale)
	x := d.Seconds() - k
	return max(a.RecoveryScale*x*x*x+wmax, a.MinRequestsPerSecond)
}
