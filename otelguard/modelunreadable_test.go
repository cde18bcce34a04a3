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

// A Fallback moves a body whose model it cannot read (here one naming two
// models) past a target with Models, sending it nothing: the switch has
// a reason of its own, not connection.
func TestCountsASwitchPastATargetABodysModelCannotBeReadForAsModelUnreadable(t *testing.T) {
	m, reader := newMetrics(t)
	r := &rig{reader: reader, m: m}
	primary, second, third := faultServer(t), faultServer(t), faultServer(t)
	require.NoError(t, primary.StartOutage(httpguardtest.ServiceUnavailable()))
	fallback, err := httpguard.NewFallback(httpguard.FallbackConfig{Targets: []httpguard.Target{
		{Name: "primary", BaseURL: primary.BaseURL()},
		{Name: "second", BaseURL: second.BaseURL(), Models: map[string]string{"deepseek-v3.2": "gpt-4.1-mini"}},
		{Name: "third", BaseURL: third.BaseURL()},
	}, OnSwitch: m.OnSwitch()})
	require.NoError(t, err)
	client := clientOf(t, primary, fallback)
	body := `{"model":"gpt-4.1","model":"deepseek-v3.2","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}`

	resp, err := client.Post(primary.BaseURL()+"/chat/completions", "application/json", strings.NewReader(body))

	require.NoError(t, err)
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	require.Equal(t, "third", resp.Header.Get(httpguard.TargetHeader))
	require.Zero(t, second.Stats().Requests)

	switches := r.collect(t)["httpguard.fallback.switches"]
	assert.EqualValues(t, 1, sum(t, switches, keyFrom.String("second"), keyTo.String("third"), keyReason.String("model_unreadable")))
	assert.Zero(t, sum(t, switches, keyFrom.String("second"), keyTo.String("third"), keyReason.String("connection")))
}
