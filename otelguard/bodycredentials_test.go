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

// A Fallback moves some requests past a target, sending it nothing: a body
// whose model it cannot read (here one naming two models) past a target
// with Models, and a body holding the caller's credentials past every
// target but the primary. Such a switch has a reason of its own, not
// connection.
func TestCountsASwitchPastATargetSentNothingByItsOwnReason(t *testing.T) {
	for _, c := range []struct {
		reason   string
		models   map[string]string // the second target's
		body     string
		servedBy string
	}{
		{"model_unreadable", map[string]string{"deepseek-v3.2": "gpt-4.1-mini"},
			`{"model":"gpt-4.1","model":"deepseek-v3.2","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}`, "third"},
		{"body_credentials", nil,
			`{"model":"deepseek-v3.2","api_key":"sk-primary","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}`, "primary"},
	} {
		t.Run(c.reason, func(t *testing.T) {
			m, reader := newMetrics(t)
			r := &rig{reader: reader, m: m}
			primary, second, third := faultServer(t), faultServer(t), faultServer(t)
			require.NoError(t, primary.StartOutage(httpguardtest.ServiceUnavailable()))
			fallback, err := httpguard.NewFallback(httpguard.FallbackConfig{Targets: []httpguard.Target{
				{Name: "primary", BaseURL: primary.BaseURL()},
				{Name: "second", BaseURL: second.BaseURL(), Models: c.models},
				{Name: "third", BaseURL: third.BaseURL()},
			}, OnSwitch: m.OnSwitch()})
			require.NoError(t, err)
			client := clientOf(t, primary, fallback)

			resp, err := client.Post(primary.BaseURL()+"/chat/completions", "application/json", strings.NewReader(c.body))

			require.NoError(t, err)
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			require.Equal(t, c.servedBy, resp.Header.Get(httpguard.TargetHeader))
			require.Zero(t, second.Stats().Requests)
			if c.servedBy == "primary" {
				require.Zero(t, third.Stats().Requests)
			}

			switches := r.collect(t)["httpguard.fallback.switches"]
			assert.EqualValues(t, 1, sum(t, switches, keyFrom.String("second"), keyTo.String("third"), keyReason.String(c.reason)))
			assert.Zero(t, sum(t, switches, keyFrom.String("second"), keyTo.String("third"), keyReason.String("connection")))
		})
	}
}
