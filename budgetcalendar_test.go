package httpguard

import (
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
