package otelguard

import (
	"io"
	"strings"
	"testing"

	"github.com/holysheep/httpguard"
	"github.com/holysheep/httpguard/httpguardtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A Fallback moves a body holding the caller's credentials past every
// target but the primary, sending nothing: the switch has a reason of its
// own, not connection.
func TestCountsASwitchPastATargetForABodyHoldingCredentialsAsBodyCredentials(t *testing.T) {
	m, reader := newMetrics(t)
	r := &rig{reader: reader, m: m}
	primary, second, third := faultServer(t), faultServer(t), faultServer(t)
	require.NoError(t, primary.StartOutage(httpguardtest.ServiceUnavailable()))
	fallback, err := httpguard.NewFallback(httpguard.FallbackConfig{Targets: []httpguard.Target{
		{Name: "primary", BaseURL: primary.BaseURL()},
		{Name: "second", BaseURL: second.BaseURL()},
		{Name: "third", BaseURL: third.BaseURL()},
	}, OnSwitch: m.OnSwitch()})
	require.NoError(t, err)
	client := clientOf(t, primary, fallback)
	body := `{"model":"deepseek-v3.2","api_key":"sk-primary","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}`

	resp, err := client.Post(primary.BaseURL()+"/chat/completions", "application/json", strings.NewReader(body))

	require.NoError(t, err)
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	require.Equal(t, "primary", resp.Header.Get(httpguard.TargetHeader))
	require.Zero(t, second.Stats().Requests+third.Stats().Requests)

	switches := r.collect(t)["httpguard.fallback.switches"]
	assert.EqualValues(t, 1, sum(t, switches, keyFrom.String("second"), keyTo.String("third"), keyReason.String("body_credentials")))
	assert.Zero(t, sum(t, switches, keyFrom.String("second"), keyTo.String("third"), keyReason.String("connection")))
}
