package httpguard

// Adversarial tests of the Budget's windows and reservations, written by a
// review; each failed before its fix. Each comment says what went wrong.

import (
	"context"
	"net/http"
	"sync/atomic"
	"testing"
	"time"
	_ "time/tzdata" // the DST tests need zones whatever the machine has

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Was a bug: a reservation that saturates at maxMoney overflows the store's
// admission sum. price() saturates n × max_tokens (both clamped to a
// billion) to a reserve of maxMoney, but MemoryBudgetStore.Reserve tests
// settled+held+Amount <= limit assuming Amount <= MaxBudgetLimit: with any
// money already settled the sum wraps negative and the request is admitted
// (and sent) though it cannot fit. While it is held, held is near maxMoney,
// so every later sum wraps too and every request is admitted: settled
// spending passes Limit with no answer costing more than its reservation.
func TestBudgetRefusesAReservationThatSaturatesMoney(t *testing.T) {
	api := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
		cr, _ := parseChatRequest(body)
		if cr.MaxOutput > 1000 {
			answerUsage(1, 1)(w, r, body) // the huge request: a short answer
			return
		}
		answerBound(w, r, body)
	})
	small := chatBody("m", 100)
	limit := 3 * reservation(small, 100)
	b := newTestBudget(t, BudgetConfig{Limit: limit})
	client := api.client(t, b)

	_, err := send(t, client, api.srv.URL, `{"model":"m","max_tokens":1,"messages":[]}`)
	require.NoError(t, err)
	require.Positive(t, b.Spent(), "some money is settled")

	// 1e7 choices × 1e9 tokens × $2/M saturates the reservation at maxMoney.
	huge := `{"model":"m","n":10000000,"max_tokens":1000000000,"messages":[]}`
	resp, err := post(client, api.srv.URL, huge)
	if assert.ErrorIs(t, err, ErrBudgetExceeded, "a $9.2 billion reservation cannot fit a %v Limit", limit) {
		assert.Equal(t, int64(1), api.hits.Load(), "the huge request was not sent")
		return
	}
	defer resp.Body.Close() // held open: its reservation stays held

	// Consequence: with the huge reservation held, every request fits.
	for range 5 {
		send(t, client, api.srv.URL, small)
	}
	assert.LessOrEqual(t, b.Spent(), limit, "settled money passed Limit though every answer cost at most its reservation")
}

// santiago moves its clocks from 00:00 to 01:00 on the first Sunday of
// September (America/Santiago, 2025-09-07): that Sunday has no midnight.
func santiago(t *testing.T) *time.Location {
	loc, err := time.LoadLocation("America/Santiago")
	require.NoError(t, err)
	return loc
}

// Was a bug: a Daily window in a zone whose DST starts at midnight does not reset
// that day. spanAt takes the day's start from time.Date(y, m, d, 0, ...),
// which Go normalizes for a midnight that does not exist to 23:00 of the day
// before, and keys the window with start.Format("2006-01-02"): Sunday
// 2025-09-07 in Santiago gets Saturday's key, "day:2025-09-06", so Sunday
// inherits Saturday's spending (and its alerts) instead of starting at zero.
func TestBudgetDailyWindowResetsOnADayWithoutMidnight(t *testing.T) {
	loc := santiago(t)
	api := newFakeAPI(t, answerUsage(10, 0))
	b := newTestBudget(t, BudgetConfig{Limit: Dollar, Period: Daily, Location: loc})
	now := time.Date(2025, 9, 6, 12, 0, 0, 0, loc) // Saturday noon
	b.now = func() time.Time { return now }
	_, err := send(t, api.client(t, b), api.srv.URL, chatBody("m", 10))
	require.NoError(t, err)
	require.Equal(t, Money(10_000), b.Spent())

	now = time.Date(2025, 9, 7, 12, 0, 0, 0, loc) // Sunday noon
	assert.Equal(t, "day:2025-09-07", b.currentSpan(now).key)
	assert.Zero(t, b.Spent(), "a new day starts from zero")
	assert.Equal(t, Dollar, b.Remaining())
}

// reserveCountingStore counts the Reserve calls made to the store it wraps.
type reserveCountingStore struct {
	BudgetStore
	reserves atomic.Int64
}

func (s *reserveCountingStore) Reserve(ctx context.Context, r Reservation, limit Money) (ReserveResult, error) {
	s.reserves.Add(1)
	return s.BudgetStore.Reserve(ctx, r, limit)
}

// Was a bug: in the last hour of the Saturday before Santiago's DST starts
// (23:00-24:00 local, 03:00-04:00 UTC), spanAt returns a window that ended
// already: its end, time.Date(2025, 9, 7, 0, ...), is normalized to 03:00
// UTC. A request waiting for room then computes nextLook = end - now < 0,
// clamped to 0, and spins: tryReserve, Reset(0), tryReserve... for all of
// MaxWait (30 s by default), hammering the store (a shared one over the
// network) and a core. currentSpan cannot cache the span either.
func TestBudgetWaiterDoesNotSpinInTheHourBeforeAMissingMidnight(t *testing.T) {
	loc := santiago(t)
	api, arrived, release := newGatedAPI(t)
	body := chatBody("m", 10)
	b := newTestBudget(t, BudgetConfig{Limit: reservation(body, 10) * 3 / 2, Period: Daily, Location: loc,
		MaxWait: 50 * time.Millisecond})
	now := time.Date(2025, 9, 6, 23, 30, 0, 0, loc) // Saturday, half an hour before the missing midnight
	b.now = func() time.Time { return now }
	store := &reserveCountingStore{BudgetStore: b.store}
	b.store = store
	assert.True(t, now.Before(b.currentSpan(now).end), "the window of now ends after now")

	client := api.client(t, b)
	first := sendAsync(t, client, api.srv.URL, body)
	<-arrived
	_, err := send(t, client, api.srv.URL, body) // waits 50ms for the first, in vain
	require.ErrorIs(t, err, ErrBudgetExceeded)
	release()
	require.NoError(t, <-first)
	assert.Less(t, store.reserves.Load(), int64(10),
		"a 50ms wait with nothing settling should try the store a few times, not spin on it")
}
