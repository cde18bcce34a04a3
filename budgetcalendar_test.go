package httpguard

import (
	"context"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Was a bug: an alert fired again in a window where it had fired once when
// the wall clock stepped back across the window's start (an NTP step, a
// manual set) while an attempt of the older window was in flight:
// fireAlerts took that attempt's late settlement for the current window's,
// since the stepped-back clock read it as current, and forgot the newer
// window's alerts, which fired again once the clock was back in it. With
// windows of a minute and a clock stepped back 11s, one alert at half the
// Limit fired 4 times in two windows.
func TestBudgetAlertsOnceAWindowWhenTheClockStepsBack(t *testing.T) {
	api := newFakeAPI(t, answerUsage(100, 0)) // $0.0001 a request
	var mu sync.Mutex
	var alerts []BudgetAlert
	b := newTestBudget(t, BudgetConfig{
		Limit: 10 * 100_000, Window: time.Minute, Alerts: []float64{0.5},
		OnAlert: func(a BudgetAlert) { mu.Lock(); alerts = append(alerts, a); mu.Unlock() },
	})
	now := time.Date(2026, 11, 25, 10, 0, 30, 0, time.UTC)
	b.now = func() time.Time { return now }
	client := api.client(t, b)
	body := `{"model":"m","max_tokens":1}`
	for range 5 {
		_, err := send(t, client, api.srv.URL, body)
		require.NoError(t, err)
	}
	late, err := post(client, api.srv.URL, body) // in flight into the next window
	require.NoError(t, err)
	defer late.Body.Close()

	now = now.Add(40 * time.Second) // 10:01:10
	for range 5 {
		_, err := send(t, client, api.srv.URL, body)
		require.NoError(t, err)
	}
	require.Len(t, alerts, 2, "one alert in each window")

	now = now.Add(-11 * time.Second) // stepped back to 10:00:59
	_, err = io.Copy(io.Discard, late.Body)
	require.NoError(t, err)
	now = now.Add(21 * time.Second) // 10:01:20
	_, err = send(t, client, api.srv.URL, body)
	require.NoError(t, err)

	mu.Lock()
	defer mu.Unlock()
	assert.Len(t, alerts, 2, "an alert fires once a window, however the wall clock steps")
}

// Was a bug: Budgets with other windows shared a MemoryBudgetStore unseen,
// though a store holds one cap. Its newest window took in the money of
// every other window starting no later: a Monthly Budget of $0.02 sharing
// a Daily one's store was admitted into each day's window, 570 requests
// of $0.001 ($0.57, 28 times its Limit) in a month of 30 a day, and its
// Spent read $0.00 all along. NewBudget now refuses the second Budget.
func TestNewBudgetRefusesAMemoryStoreThatABudgetWithOtherWindowsUses(t *testing.T) {
	tokyo := time.FixedZone("Asia/Tokyo", 9*3600)
	tests := map[string]struct{ first, second BudgetConfig }{
		"Daily and Monthly":      {BudgetConfig{Period: Daily}, BudgetConfig{Period: Monthly}},
		"Daily in two zones":     {BudgetConfig{Period: Daily}, BudgetConfig{Period: Daily, Location: tokyo}},
		"a Window and a Period":  {BudgetConfig{Window: 24 * time.Hour}, BudgetConfig{Period: Daily}},
		"two Windows":            {BudgetConfig{Window: time.Hour}, BudgetConfig{Window: time.Minute}},
		"a Window and no window": {BudgetConfig{Window: time.Hour}, BudgetConfig{}},
	}
	for name, tt := range tests {
		store := NewMemoryBudgetStore()
		tt.first.Limit, tt.first.Prices, tt.first.Store = Dollar, testPrices, store
		tt.second.Limit, tt.second.Prices, tt.second.Store = Dollar, testPrices, store
		_, err := NewBudget(tt.first)
		require.NoError(t, err, name)
		_, err = NewBudget(tt.second)
		assert.ErrorContains(t, err, "httpguard: budget: Store: a Budget with ", name)
		assert.ErrorContains(t, err, "needs a store of its own", name)
	}
	_, err := NewBudget(BudgetConfig{Limit: Dollar, Prices: testPrices, Period: Monthly})
	assert.NoError(t, err, "a Budget's own store is its alone")
}

func TestNewBudgetLetsBudgetsWithTheSameWindowsShareAMemoryStore(t *testing.T) {
	store := NewMemoryBudgetStore()
	for range 2 {
		loc, err := time.LoadLocation("Europe/London")
		require.NoError(t, err)
		_, err = NewBudget(BudgetConfig{Limit: Dollar, Prices: testPrices, Period: Daily, Location: loc, Store: store})
		require.NoError(t, err)
	}
	utc := NewMemoryBudgetStore()
	_, err := NewBudget(BudgetConfig{Limit: Dollar, Prices: testPrices, Period: Daily, Store: utc})
	require.NoError(t, err)
	_, err = NewBudget(BudgetConfig{Limit: 2 * Dollar, Prices: testPrices, Period: Daily, Location: time.UTC, Store: utc})
	assert.NoError(t, err, "nil Location is UTC")
}

// Was a bug: a Daily window east of UTC on a day whose midnight occurs
// twice (Amman turned its clocks back from Friday 01:00 to 00:00, as on
// 2021-10-29) did not start at its first midnight: time.Date gives the
// second there, so Thursday's window ran until it, an hour into Friday,
// while a process that first read the clock in that hour opened Friday's
// window an hour before its start. No zone of tzdata 2025b does this from
// 2024 on, but Jordan and Gaza did until 2021, and Havana, west of UTC,
// where time.Date gives the first midnight, does.
func TestBudgetDailyWindowStartsAtTheFirstOfTwoMidnights(t *testing.T) {
	loc, err := time.LoadLocation("Asia/Amman")
	require.NoError(t, err)
	b := newTestBudget(t, BudgetConfig{Limit: Dollar, Period: Daily, Location: loc})
	first := time.Date(2021, 10, 28, 21, 0, 0, 0, time.UTC) // Friday 00:00 EEST
	require.Equal(t, "2021-10-29 00:00 EEST", first.In(loc).Format("2006-01-02 15:04 MST"))

	thursday := b.spanAt(first.Add(-time.Minute))
	assert.Equal(t, "day:2021-10-28", thursday.key)
	assert.True(t, thursday.end.Equal(first), "Thursday ends at the first midnight, not %v", thursday.end)
	friday := b.spanAt(first.Add(30 * time.Minute))
	assert.Equal(t, "day:2021-10-29", friday.key)
	assert.True(t, friday.start.Equal(first), "Friday starts at the first midnight, not %v", friday.start)
	assert.Equal(t, 25*time.Hour, friday.end.Sub(friday.start))
}

// Was a bug: a refusal named the end of the window of the Budget's clock
// as its reset, though the store refused in another window: a newer one,
// after the wall clock stepped back across a window's start (or, in a
// fleet, while this process's clock lags the one that opened it), whose
// spend resets a whole window later. Hourly windows and a clock stepped
// back 7s: the refusal said 11:00:00, 2s later, and a request sent then
// was refused again until 12:00.
func TestBudgetRefusalNamesTheResetOfTheWindowThatRefused(t *testing.T) {
	api := newFakeAPI(t, answerBound)
	body := chatBody("m", 10)
	b := newTestBudget(t, BudgetConfig{Limit: reservation(body, 10), Window: time.Hour, MaxWait: -1})
	now := time.Date(2026, 11, 25, 11, 0, 5, 0, time.UTC)
	b.now = func() time.Time { return now }
	client := api.client(t, b)
	_, err := send(t, client, api.srv.URL, body) // spends the 11:00 window's Limit
	require.NoError(t, err)

	now = now.Add(-7 * time.Second) // 10:59:58
	_, err = send(t, client, api.srv.URL, body)
	var be *BudgetError
	require.ErrorAs(t, err, &be)
	assert.Equal(t, "2026-11-25T12:00:00Z", be.Reset.Format(time.RFC3339), "the 11:00 window refused, and resets at 12:00")
}

// laggingStore refuses every reservation in window, as redisguard's store
// does for a process whose clock runs ahead of Redis's: it keeps the
// fleet in the window Redis is in, spent.
type laggingStore struct {
	failingStore
	window string
}

func (s laggingStore) Reserve(_ context.Context, _ Reservation, limit Money) (ReserveResult, error) {
	return ReserveResult{Window: s.window, Settled: limit}, nil
}

// Was a bug, likewise: a process whose clock ran 5s ahead of a shared
// store's, refused in the window the store still kept the fleet in, was
// told the budget reset at the end of its own window, an hour late.
func TestBudgetRefusalInTheWindowBeforeNamesItsEnd(t *testing.T) {
	b := newTestBudget(t, BudgetConfig{Limit: Dollar, Window: time.Hour, MaxWait: -1,
		Store: laggingStore{window: "window:1h0m0s:2026-11-25T10:00:00Z"}})
	b.now = func() time.Time { return time.Date(2026, 11, 25, 11, 0, 5, 0, time.UTC) } // 5s ahead of the store
	api := newFakeAPI(t, answerBound)
	_, err := send(t, api.client(t, b), api.srv.URL, chatBody("m", 10))
	var be *BudgetError
	require.ErrorAs(t, err, &be)
	assert.Equal(t, "2026-11-25T11:00:00Z", be.Reset.Format(time.RFC3339),
		"the fleet leaves the 10:00 window when the 11:00 one starts on the store's clock, not at 12:00")
	assert.Zero(t, api.hits.Load())
}

// Found in review: two fixed zones of one name were taken for one.
func TestNewBudgetRefusesAMemoryStoreOfAFixedZoneOfTheSameName(t *testing.T) {
	s := NewMemoryBudgetStore()
	_, err := NewBudget(BudgetConfig{Limit: Dollar, Prices: testPrices, Store: s, Period: Daily, Location: time.FixedZone("", 10*3600)})
	require.NoError(t, err)
	_, err = NewBudget(BudgetConfig{Limit: Dollar, Prices: testPrices, Store: s, Period: Daily, Location: time.FixedZone("", -10*3600)})
	assert.Error(t, err)
	_, err = NewBudget(BudgetConfig{Limit: Dollar, Prices: testPrices, Store: s, Period: Daily, Location: time.FixedZone("", 10*3600)})
	assert.NoError(t, err, "the same zone made again")
}

// Pins a documented limit of the in-memory store: one reading of a wall
// clock far ahead (a year, an NTP step undone) opens that future window,
// and the store, which never admits money into an older window again (the
// BudgetStore contract), keeps admitting into it once the clock is back:
// the Budget serves one Limit until the future window ends, then refuses,
// and says when that window ends. It never passes the Limit.
func TestBudgetAClockReadFarAheadHoldsTheMemoryStoreInItsWindow(t *testing.T) {
	api := newFakeAPI(t, answerUsage(100, 0)) // $0.0001 a request
	b := newTestBudget(t, BudgetConfig{Limit: 10 * 100_000, Period: Daily, Location: time.UTC})
	today := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	now := today.AddDate(1, 0, 0) // one reading a year ahead
	b.now = func() time.Time { return now }
	client := api.client(t, b)
	body := `{"model":"m","max_tokens":1}`
	_, err := send(t, client, api.srv.URL, body)
	require.NoError(t, err)

	served := 1
	for _, day := range []time.Time{today, today.AddDate(0, 0, 1), today.AddDate(0, 0, 2)} {
		now = day
		for range 20 {
			if _, err := send(t, client, api.srv.URL, body); err != nil {
				var be *BudgetError
				require.ErrorAs(t, err, &be)
				assert.Equal(t, time.Date(2027, 11, 26, 0, 0, 0, 0, time.UTC), be.Reset,
					"the refusal names the end of the window the clock ahead opened")
				continue
			}
			served++
		}
	}
	assert.Equal(t, 10, served, "one Limit in all, until the window read ahead ends")
	assert.Equal(t, int64(10), api.hits.Load(), "what the provider billed stays within the Limit")
}

// A refusal's Reset names the end of the window the store refused in,
// however far from the Budget's clock: spanOf reads a window's key back
// into its span, for every calendar, also on days whose midnight a clock
// change skips (São Paulo, 4 November 2018).
func TestBudgetSpanOfReadsEveryWindowKeyBack(t *testing.T) {
	saoPaulo, err := time.LoadLocation("America/Sao_Paulo")
	require.NoError(t, err)
	at := []time.Time{
		time.Date(2018, 11, 3, 23, 30, 0, 0, saoPaulo),
		time.Date(2018, 11, 4, 1, 30, 0, 0, saoPaulo),
		time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC),
		time.Date(2027, 12, 31, 23, 59, 59, 0, time.UTC),
	}
	for _, c := range []BudgetConfig{
		{Limit: Dollar, Period: Daily, Location: saoPaulo},
		{Limit: Dollar, Period: Monthly, Location: saoPaulo},
		{Limit: Dollar, Period: Daily, Location: time.UTC},
		{Limit: Dollar, Window: 90 * time.Second},
	} {
		b := newTestBudget(t, c)
		for _, now := range at {
			want := b.spanAt(now)
			got, ok := b.spanOf(want.key)
			require.True(t, ok, "%v %v: %s", c.Period, c.Window, want.key)
			assert.True(t, want.start.Equal(got.start) && want.end.Equal(got.end), "%s: %v–%v, want %v–%v", want.key, got.start, got.end, want.start, want.end)
		}
		for _, key := range []string{"lifetime", "day:2026-13-01", "month:2026-11-25", "window:1m0s:2026-11-25T10:00:00Z", "day:2026-11-25x"} {
			_, ok := b.spanOf(key)
			assert.False(t, ok, "%v %v: %s is not this calendar's", c.Period, c.Window, key)
		}
	}
}
