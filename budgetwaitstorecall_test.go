package httpguard

import (
	"context"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// stallingStore is a shared store whose Reserve, once stall is set, waits
// until its caller's context ends and fails with the context's error, as
// a Redis client does with a call its context cuts short.
type stallingStore struct {
	*MemoryBudgetStore
	stall atomic.Bool
}

func (s *stallingStore) Reserve(ctx context.Context, r Reservation, limit Money) (ReserveResult, error) {
	if s.stall.Load() {
		<-ctx.Done()
		return ReserveResult{}, ctx.Err()
	}
	return s.MemoryBudgetStore.Reserve(ctx, r, limit)
}

// A request waiting for room whose deadline passes during one of its looks
// at a shared store (a round trip to Redis) is refused with
// ErrBudgetExceeded, as one whose deadline passes between looks is: the
// store did not fail, the caller's deadline ended the wait. It got the
// store's error, "store: context deadline exceeded", which a caller takes
// for a store that failed.
func TestBudgetWaitEndedByADeadlineDuringAStoreCallIsBudgetExceeded(t *testing.T) {
	api, arrived, release := newGatedAPI(t)
	body := chatBody("m", 10)
	store := &stallingStore{MemoryBudgetStore: NewMemoryBudgetStore()}
	b := newTestBudget(t, BudgetConfig{Limit: reservation(body, 10) * 3 / 2, Store: store, MaxWait: time.Hour})
	b.poll = time.Millisecond
	b.onWait = func() { store.stall.Store(true) } // the next look is cut short by the deadline
	client := api.client(t, b)

	first := sendAsync(t, client, api.srv.URL, body)
	<-arrived
	ctx, cancel := context.WithTimeoutCause(context.Background(), 50*time.Millisecond, errCallerGaveUp)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "POST", api.srv.URL+"/v1/chat/completions", strings.NewReader(body))
	require.NoError(t, err)
	_, err = client.Do(req)
	require.ErrorIs(t, err, ErrBudgetExceeded, "%v", err)
	assert.ErrorIs(t, err, errCallerGaveUp, "the caller's cause")
	assert.NotContains(t, err.Error(), "store")
	var be *BudgetError
	require.ErrorAs(t, err, &be)
	assert.Equal(t, reservation(body, 10)*3/2-reservation(body, 10), be.Remaining, "what the last look found left")
	assert.Equal(t, int64(1), api.hits.Load(), "nothing of the refused request was sent")
	store.stall.Store(false)
	release()
	require.NoError(t, <-first)
}

// The same wait, cancelled by its caller during a look at the store, ends
// with the context's error, as a wait cancelled between looks does.
func TestBudgetWaitCanceledDuringAStoreCallEndsWithTheContextsError(t *testing.T) {
	api, arrived, release := newGatedAPI(t)
	body := chatBody("m", 10)
	store := &stallingStore{MemoryBudgetStore: NewMemoryBudgetStore()}
	b := newTestBudget(t, BudgetConfig{Limit: reservation(body, 10) * 3 / 2, Store: store, MaxWait: time.Hour})
	b.poll = time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	b.onWait = func() {
		store.stall.Store(true)
		time.AfterFunc(20*time.Millisecond, cancel)
	}
	client := api.client(t, b)

	first := sendAsync(t, client, api.srv.URL, body)
	<-arrived
	req, err := http.NewRequestWithContext(ctx, "POST", api.srv.URL+"/v1/chat/completions", strings.NewReader(body))
	require.NoError(t, err)
	_, err = client.Do(req)
	require.ErrorIs(t, err, context.Canceled)
	assert.NotErrorIs(t, err, ErrBudgetExceeded)
	assert.Contains(t, err.Error(), "while waiting for room")
	assert.NotContains(t, err.Error(), "store")
	store.stall.Store(false)
	release()
	require.NoError(t, <-first)
}
