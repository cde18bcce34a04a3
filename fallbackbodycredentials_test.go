package httpguard

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A body may carry the caller's own provider credentials, for the
// primary: LiteLLM's clientside credentials ("api_key", or a
// "user_config" whose model list holds keys), a gateway's
// "customer_credentials" or "vertex_credentials". Resent as it was, the
// body handed them to another provider's host, as a primary's
// Authorization header would have been, had the Fallback not removed it.
// Such a body goes to no other target.
func TestFallbackSendsABodyHoldingCredentialsToNoOtherTarget(t *testing.T) {
	for _, body := range []string{
		`{"model":"small","messages":[],"api_key":"sk-primary-body"}`,
		`{"model":"user-azure","messages":[],"user_config":{"model_list":[{"litellm_params":{"api_key":"sk-azure"}}]}}`,
		`{"model":"small","customer_credentials":{"openai":{"api_key":"sk-primary"}}}`,
		`{"model":"small","Vertex_Credentials":"{\"private_key\":\"-----BEGIN\"}"}`,
		`{"model":"small","aws_secret_access_key":"primary","aws_session_token":"primary"}`,
	} {
		r := newMapRig(t)
		req, err := http.NewRequest(http.MethodPost, r.primary.URL+"/chat/completions", bytes.NewReader([]byte(body)))
		require.NoError(t, err)
		resp, err := r.client.Do(req)
		require.NoError(t, err)
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode, body)
		assert.Equal(t, "primary", resp.Header.Get(TargetHeader), "the caller gets the primary's answer: %s", body)
		assert.Empty(t, r.second.received(), body)
		assert.Empty(t, r.third.received(), body)
	}
}

// Fields that only look like credentials go along: max_tokens and
// max_completion_tokens, a prompt_cache_key.
func TestFallbackSendsABodyWithTokenCountsToTheNextTarget(t *testing.T) {
	r := newMapRig(t)
	body := `{"model":"other","max_tokens":5,"max_completion_tokens":5,"prompt_cache_key":"k","messages":[]}`
	req, err := http.NewRequest(http.MethodPost, r.primary.URL+"/chat/completions", bytes.NewReader([]byte(body)))
	require.NoError(t, err)
	resp, err := r.client.Do(req)
	require.NoError(t, err)
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	assert.Equal(t, "second", resp.Header.Get(TargetHeader))
	assert.Equal(t, []string{body}, r.second.received())
}

// A body longer than MaxBufferedBody is read for credentials as far as
// that.
func TestFallbackReadsALongBodyForCredentialsUpToItsLimit(t *testing.T) {
	r := newMapRig(t)
	f, err := NewFallback(FallbackConfig{MaxBufferedBody: 1024, Targets: []Target{
		{Name: "primary", BaseURL: r.primary.URL},
		{Name: "second", BaseURL: r.second.URL},
	}})
	require.NoError(t, err)
	c := &http.Client{Transport: f.Wrap(nil)}
	t.Cleanup(c.CloseIdleConnections)
	body := `{"api_key":"sk-primary","model":"m","messages":[{"role":"user","content":"` + strings.Repeat("a", 2048) + `"}]}`
	resp, err := c.Post(r.primary.URL+"/chat/completions", "application/json", strings.NewReader(body))
	require.NoError(t, err)
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	assert.Equal(t, "primary", resp.Header.Get(TargetHeader))
	assert.Empty(t, r.second.received())
}
