package httpguard

import (
	"net/http"
	"net/http/httptest"
	"slices"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// OpenAI's Responses API runs a WebSocket on its own path (GET
// /v1/responses, upgraded): every response.create sent over it is billed,
// and no answer the Budget reads reports it, so a Budget refuses a
// protocol upgrade. It looked for one under the canonical key alone, in
// its first value only; but net/http writes a key set directly in the map
// as it is ("upgrade"), and every value of it, and servers read header
// names in any case and all their values: such an upgrade went through
// unpriced, and the session spent outside the Limit.
func TestBudgetRefusesAnUpgradeHoweverItsHeaderIsWritten(t *testing.T) {
	var upgraded atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !slices.Contains(r.Header.Values("Upgrade"), "websocket") {
			http.Error(w, "not a websocket", http.StatusBadRequest)
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		upgraded.Add(1)
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		brw.Flush()
	}))
	defer srv.Close()
	b := newTestBudget(t, BudgetConfig{Limit: Dollar})
	c := clientFor(t, b)
	for _, h := range []http.Header{
		{"upgrade": {"websocket"}, "connection": {"Upgrade"}},
		{"Upgrade": {"", "websocket"}, "Connection": {"Upgrade"}},
	} {
		req, err := http.NewRequest("GET", srv.URL+"/v1/responses", nil)
		require.NoError(t, err)
		req.Header = h
		resp, err := c.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		require.ErrorIs(t, err, ErrUnknownModel, "%v: a protocol upgrade spends outside any answer", h)
	}
	assert.Zero(t, upgraded.Load(), "no WebSocket was opened")
}
