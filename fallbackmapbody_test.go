package httpguard

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/holysheep/httpguard/httpguardtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// longChat is a chat request for model whose body is longer than 1 KiB.
func longChat(model string) string {
	return fmt.Sprintf(`{"model":%q,"max_tokens":16,"messages":[{"role":"user","content":%q}]}`, model, strings.Repeat("a", 2048))
}

// A body longer than MaxBufferedBody cannot be read for its model. Sent as
// it was, it would ask a target whose Models map that model for the
// primary's model name (a 404 there, or another model than the one
// configured): it goes to no such target, and the caller gets the
// primary's answer, as for a body too long to send again.
func TestFallbackSendsABodyTooLongToMapToNoTargetWithModels(t *testing.T) {
	primary := newFaultServer(t, httpguardtest.Config{})
	second := newFaultServer(t, httpguardtest.Config{})
	require.NoError(t, primary.StartOutage(httpguardtest.ServiceUnavailable()))
	f, err := NewFallback(FallbackConfig{MaxBufferedBody: 1024, Targets: []Target{
		{Name: "primary", BaseURL: primary.BaseURL()},
		{Name: "second", BaseURL: second.BaseURL(), Models: map[string]string{"small": "big"}},
	}})
	require.NoError(t, err)
	c := clientFor(t, f)

	resp, err := c.Post(primary.BaseURL()+"/chat/completions", "application/json", strings.NewReader(longChat("small")))

	require.NoError(t, err)
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	assert.Equal(t, "primary", resp.Header.Get(TargetHeader))
	assert.Zero(t, second.Stats().Requests, "the second target was not asked for the primary's model")
}

// It moves on past such a target to one that needs no model read.
func TestFallbackMovesABodyTooLongToMapPastATargetWithModels(t *testing.T) {
	primary := newFaultServer(t, httpguardtest.Config{})
	second := newFaultServer(t, httpguardtest.Config{})
	third := newFaultServer(t, httpguardtest.Config{})
	require.NoError(t, primary.StartOutage(httpguardtest.ServiceUnavailable()))
	var switches []string
	f, err := NewFallback(FallbackConfig{MaxBufferedBody: 1024, Targets: []Target{
		{Name: "primary", BaseURL: primary.BaseURL()},
		{Name: "second", BaseURL: second.BaseURL(), Models: map[string]string{"small": "big"}},
		{Name: "third", BaseURL: third.BaseURL()},
	}, OnSwitch: func(e FallbackEvent) { switches = append(switches, e.From+"→"+e.To) }})
	require.NoError(t, err)
	c := clientFor(t, f)

	resp, err := c.Post(primary.BaseURL()+"/chat/completions", "application/json", strings.NewReader(longChat("small")))

	require.NoError(t, err)
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, "third", resp.Header.Get(TargetHeader))
	assert.Zero(t, second.Stats().Requests)
	assert.EqualValues(t, 1, third.Stats().Requests)
	assert.Equal(t, []string{"primary→second", "second→third"}, switches)
}

// A primary with Models is not skipped for such a body while it may be up:
// the request is refused, unsent, naming the limit, rather than sent to a
// fallback or to the primary for a model its Models map away from.
func TestFallbackRefusesABodyTooLongToMapForAPrimaryWithModels(t *testing.T) {
	primary := newFaultServer(t, httpguardtest.Config{})
	second := newFaultServer(t, httpguardtest.Config{})
	f, err := NewFallback(FallbackConfig{MaxBufferedBody: 1024, Targets: []Target{
		{Name: "primary", BaseURL: primary.BaseURL(), Models: map[string]string{"alias": "small"}},
		{Name: "second", BaseURL: second.BaseURL()},
	}})
	require.NoError(t, err)
	c := clientFor(t, f)

	_, err = c.Post(primary.BaseURL()+"/chat/completions", "application/json", strings.NewReader(longChat("alias")))

	require.Error(t, err)
	assert.True(t, IsRefusal(err))
	assert.Contains(t, err.Error(), "longer than MaxBufferedBody")
	assert.Zero(t, primary.Stats().Requests)
	assert.Zero(t, second.Stats().Requests)
}
