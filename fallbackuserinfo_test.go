package httpguard

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A target's BaseURL may carry its credentials as user info
// ("https://user:password@llm.internal/v1", a self-hosted server behind
// basic auth), which http.Client sends as Basic authorization for the URLs
// it is given. The Fallback sends the target's URL below http.Client,
// whose transport never reads user info: the credentials were dropped,
// and the target, its fallback, answered every request 401.
func TestFallbackSendsTheUserInfoOfATargetsBaseURLAsBasicAuthorization(t *testing.T) {
	primary := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	t.Cleanup(primary.Close)
	var mu sync.Mutex
	var auth []string
	second := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		mu.Lock()
		auth = append(auth, r.Header.Get("Authorization"))
		mu.Unlock()
		if u, p, ok := r.BasicAuth(); !ok || u != "fallback" || p != "pa ss" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.Write([]byte(`{}`))
	}))
	t.Cleanup(second.Close)
	f, err := NewFallback(FallbackConfig{Targets: []Target{
		{Name: "primary", BaseURL: primary.URL},
		{Name: "second", BaseURL: strings.Replace(second.URL, "http://", "http://fallback:pa%20ss@", 1)},
	}})
	require.NoError(t, err)
	c := &http.Client{Transport: f.Wrap(nil)}
	t.Cleanup(c.CloseIdleConnections)

	req, err := http.NewRequest(http.MethodPost, primary.URL+"/chat/completions", strings.NewReader(`{"model":"m"}`))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer sk-primary")
	resp, err := c.Do(req)

	require.NoError(t, err)
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, "second", resp.Header.Get(TargetHeader))
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, auth, 1)
	assert.NotContains(t, auth[0], "sk-primary")
}

// A target's Header that sets Authorization wins over its user info, as
// http.Client lets a request's own Authorization win.
func TestFallbackTargetsHeaderAuthorizationWinsOverItsUserInfo(t *testing.T) {
	tg, err := newTarget(Target{BaseURL: "https://u:p@example.com/v1", Header: http.Header{"Authorization": {"Bearer sk-second"}}}, false)
	require.NoError(t, err)
	assert.Equal(t, []string{"Bearer sk-second"}, tg.header["Authorization"])
	assert.Nil(t, tg.base.User, "the credentials are not kept in the URL")
}
