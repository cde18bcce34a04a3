package httpguard

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// h2HeaderResetter is a loopback HTTP/2 server (h2c, prior knowledge)
// written frame by frame that resets every stream with PROTOCOL_ERROR as
// soon as it reads its request headers, as a server rejecting one of them
// does, before any of the body: heads counts the streams it reset.
type h2HeaderResetter struct {
	loopback
	heads atomic.Int64
}

func newH2HeaderResetter(t *testing.T) *h2HeaderResetter {
	t.Helper()
	s := &h2HeaderResetter{loopback: listenLoopback(t)}
	serveEach(t, s.ln, s.serve)
	return s
}

func (s *h2HeaderResetter) serve(c net.Conn) {
	r := bufio.NewReader(c)
	if _, err := io.ReadFull(r, make([]byte, 24)); err != nil {
		return
	}
	h2Frame(c, 4, 0, 0, nil) // SETTINGS
	for {
		typ, flags, stream, p, err := readH2Frame(r)
		if err != nil {
			return
		}
		switch typ {
		case 4: // SETTINGS
			if flags&1 == 0 {
				h2Frame(c, 4, 1, 0, nil)
			}
		case 6: // PING
			if flags&1 == 0 {
				h2Frame(c, 6, 1, 0, p)
			}
		case 1: // HEADERS: reset at once
			s.heads.Add(1)
			h2Frame(c, 3, 0, stream, []byte{0, 0, 0, 1}) // RST_STREAM PROTOCOL_ERROR
		}
	}
}

// net/http sends a request again on its own, from GetBody, on a new
// connection each time, at once and without end, when its HTTP/2 stream is
// reset with PROTOCOL_ERROR. The Budget refused GetBody only once a write
// was read whole and unanswered: a server that resets each stream as soon
// as it reads its headers (one rejecting a header does), before a body
// longer than the stream's window was written whole, got thousands of
// requests a second, none read whole (so none charged), through the
// Budget and through the recommended stack (whose Retrier leaves the gate
// to the Budget), until the caller's deadline. While nothing answered,
// GetBody now serves no third write. A Retrier alone gated it already.
func TestBudgetBoundsNetHTTPResendsOfAStreamResetBeforeItsBodyWasWritten(t *testing.T) {
	// A body longer than the stream's window: net/http has not written
	// it whole when the reset comes.
	body := fmt.Sprintf(`{"model":"m","max_tokens":5,"messages":[{"role":"user","content":%q}]}`, strings.Repeat("a", 200<<10))
	for _, c := range []struct {
		name   string
		layers func(t *testing.T) []Layer
	}{
		{"retrier+budget+limiter", func(t *testing.T) []Layer {
			r, err := NewRetrier(fastRetries)
			require.NoError(t, err)
			l, err := NewLimiter(LimitConfig{TokensPerMinute: 600_000_000})
			require.NoError(t, err)
			return []Layer{r, newTestBudget(t, BudgetConfig{Limit: 100 * reservation(body, 5)}), l}
		}},
		{"budget", func(t *testing.T) []Layer {
			return []Layer{newTestBudget(t, BudgetConfig{Limit: 100 * reservation(body, 5)})}
		}},
		{"retrier", func(t *testing.T) []Layer {
			r, err := NewRetrier(fastRetries)
			require.NoError(t, err)
			return []Layer{r}
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := newH2HeaderResetter(t)
			client := &http.Client{Transport: Chain(h2cTransport(t), c.layers(t)...)}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.URL()+"/v1/chat/completions", strings.NewReader(body))
			require.NoError(t, err)
			resp, err := client.Do(req)
			if err == nil {
				resp.Body.Close()
			}
			t.Logf("err %v; the server got %d requests", err, s.heads.Load())
			require.Error(t, err)
			assert.NoError(t, ctx.Err(), "the call ended before the caller's deadline")
			assert.LessOrEqual(t, s.heads.Load(), int64(3*(fastRetries.MaxRetries+1)), "at most three sends an attempt")
		})
	}
}
