package otelguard

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/holysheep/httpguard"
	"github.com/holysheep/httpguard/httpguardtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A Fallback moves a body too long to read for its model past a target
// whose Models map models, sending it nothing: no connection failed,
// and the switch was labelled connection. It has a reason of its own.
func TestCountsASwitchPastATargetABodyIsTooLongToMapForAsBodyTooLong(t *testing.T) {
	m, reader := newMetrics(t)
	r := &rig{reader: reader, m: m}
	primary, second, third := faultServer(t), faultServer(t), faultServer(t)
	require.NoError(t, primary.StartOutage(httpguardtest.ServiceUnavailable()))
	fallback, err := httpguard.NewFallback(httpguard.FallbackConfig{MaxBufferedBody: 1024, Targets: []httpguard.Target{
		{Name: "primary", BaseURL: primary.BaseURL()},
		{Name: "second", BaseURL: second.BaseURL(), Models: map[string]string{"deepseek-v3.2": "gpt-4.1-mini"}},
		{Name: "third", BaseURL: third.BaseURL()},
	}, OnSwitch: m.OnSwitch()})
	require.NoError(t, err)
	client := clientOf(t, primary, fallback)
	long := `{"model":"deepseek-v3.2","max_tokens":16,"messages":[{"role":"user","content":"` + strings.Repeat("a", 2048) + `"}]}`

	resp, err := client.Post(primary.BaseURL()+"/chat/completions", "application/json", strings.NewReader(long))

	require.NoError(t, err)
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "third", resp.Header.Get(httpguard.TargetHeader))
	require.Zero(t, second.Stats().Requests)

	got := r.collect(t)
	switches := got["httpguard.fallback.switches"]
	assert.EqualValues(t, 1, sum(t, switches, keyFrom.String("primary"), keyTo.String("second"), keyReason.String("status_503")))
	assert.EqualValues(t, 1, sum(t, switches, keyFrom.String("second"), keyTo.String("third"), keyReason.String("body_too_long")))
	assert.Zero(t, sum(t, switches, keyFrom.String("second"), keyTo.String("third"), keyReason.String("connection")))
}
