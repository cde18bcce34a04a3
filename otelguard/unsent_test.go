package otelguard

import (
	"net/http"
	"strings"
	"testing"

	"github.com/holysheep/httpguard"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// net/http refuses, before asking for any connection, a request with a
// header value that is not valid HTTP: an API key read from a file or a
// secret with its trailing newline, on every request. Nothing reaches the
// server, and the Retrier returns a refusal, but Attempts, below it, saw
// net/http's bare error and counted an attempt with error.type=connection
// each time: a network outage on the dashboards where a key is wrong, and
// attempts "sent to the server" that were not.
func TestAttemptsCountsNoAttemptNetHTTPRefusedToSend(t *testing.T) {
	srv := faultServer(t)
	m, reader := newMetrics(t)
	r := &rig{srv: srv, reader: reader, m: m}
	retrier, err := httpguard.NewRetrier(httpguard.DefaultRetryPolicy())
	require.NoError(t, err)
	for name, layers := range map[string][]httpguard.Layer{
		"below a Retrier": {m.Requests(), retrier, m.Attempts()},
		"alone":           {m.Attempts()},
	} {
		client := clientOf(t, srv, layers...)
		req, err := http.NewRequest(http.MethodPost, srv.BaseURL()+"/chat/completions", strings.NewReader(chat))
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer sk-test\n")
		_, err = client.Do(req)
		require.ErrorContains(t, err, "invalid header field value", name)
	}

	require.Zero(t, srv.Stats().Requests, "nothing reached the server")
	assert.Zero(t, series(t, r, "httpguard.attempts"), "no attempt was sent")
	assert.EqualValues(t, 1, sum(t, r.collect(t)["httpguard.refusals"], keyLayer.String("other"), keyReason.String("refused")),
		"the Retrier refused the request, nothing sent")
}
