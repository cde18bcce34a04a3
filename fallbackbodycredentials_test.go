package httpguard

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"testing/iotest"

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
//
// A body longer than MaxBufferedBody is read for credentials to its end.
// Credentials after its first MaxBufferedBody bytes, as the OpenAI SDKs
// write them when they are passed in extra_body after a long message list
// (an image, a long context), went to the next target with them: only the
// first MaxBufferedBody bytes were read for credentials.
func TestFallbackSendsABodyHoldingCredentialsToNoOtherTarget(t *testing.T) {
	type sent struct {
		body string
		long bool // through longBodyClient, which holds 1024 bytes of a body
	}
	cases := []sent{
		{body: `{"model":"small","messages":[],"api_key":"sk-primary-body"}`},
		{body: `{"model":"user-azure","messages":[],"user_config":{"model_list":[{"litellm_params":{"api_key":"sk-azure"}}]}}`},
		{body: `{"model":"small","customer_credentials":{"openai":{"api_key":"sk-primary"}}}`},
		{body: `{"model":"small","Vertex_Credentials":"{\"private_key\":\"-----BEGIN\"}"}`},
		{body: `{"model":"small","aws_secret_access_key":"primary","aws_session_token":"primary"}`},
		// within the first MaxBufferedBody bytes of a long body
		{body: `{"api_key":"sk-primary","model":"m","messages":[{"role":"user","content":"` + strings.Repeat("a", 2048) + `"}]}`, long: true},
	}
	const head = `{"model":"m","messages":[{"role":"user","content":"`
	for _, tail := range []string{
		`"api_key":"sk-primary"`,
		`"user_config":{"model_list":[]}`,
		// a key that spans the chunks the body is read in, longer than
		// the keys the lexer keeps whole
		`"` + strings.Repeat("x", 300) + `_api_key":"sk-primary"`,
	} {
		// the last n has the key span the first 32KiB the body is read in
		for _, n := range []int{2048, 100 << 10, 32<<10 - len(head) - len(`"}],`) - 3} {
			cases = append(cases, sent{body: head + strings.Repeat("a", n) + `"}],` + tail + `}`, long: true})
		}
	}
	for _, c := range cases {
		r := newMapRig(t)
		client := r.client
		if c.long {
			client = longBodyClient(t, r)
		}
		resp := sendToPrimary(t, client, r, c.body)
		short := c.body[:min(len(c.body), 60)] + "..." + c.body[max(0, len(c.body)-40):]
		assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode, short)
		assert.Equal(t, "primary", resp.Header.Get(TargetHeader), "the caller gets the primary's answer: %s", short)
		assert.Zero(t, len(r.second.received()), "the second target got the body: %s", short)
		assert.Zero(t, len(r.third.received()), short)
	}
}

// A body without credentials goes to the next target, whole, a long one
// too. Fields that only look like credentials go along: max_tokens and
// max_completion_tokens, a prompt_cache_key. So do a credential's members
// that hold none (null, ""): clients that write every field of a typed
// request (pydantic's model_dump without exclude_none) send
// "api_key": null and "user_config": null.
func TestFallbackSendsABodyWithoutCredentialsToTheNextTarget(t *testing.T) {
	for _, c := range []struct {
		body string
		long bool // through longBodyClient, which holds 1024 bytes of a body
	}{
		{body: `{"model":"other","max_tokens":5,"max_completion_tokens":5,"prompt_cache_key":"k","messages":[]}`},
		{body: `{"model":"m","messages":[{"role":"user","content":"` + strings.Repeat("a", 100<<10) + `"}],"max_tokens":5,"prompt_cache_key":"k"}`, long: true},
		{body: `{"model":"other","messages":[],"api_key":null,"user_config":null}`},
		{body: `{"model":"other","messages":[],"api_key":"","aws_session_token":null}`},
	} {
		r := newMapRig(t)
		client := r.client
		if c.long {
			client = longBodyClient(t, r)
		}
		resp := sendToPrimary(t, client, r, c.body)
		short := c.body[:min(len(c.body), 60)]
		assert.Equal(t, "second", resp.Header.Get(TargetHeader), short)
		assert.Equal(t, []string{c.body}, r.second.received(), short)
	}
}

// Read a byte at a time, every key spans chunks: a credential's is found
// whatever its escapes, and other keys are not taken for one. A
// credential's member that holds none (null, "") holds no credentials.
func TestReadHoldsCredentialsAcrossChunks(t *testing.T) {
	for body, want := range map[string]bool{
		`{"model":"m","api\u005fkey":"sk"}`:                   true,
		`{"model":"m","AWS_Session_Token":"x"}`:               true,
		`{"model":"m","max_tokens":5,"prompt_cache_key":"k"}`: false,
		`{"messages":[{"api_key":"nested"}],"model":"m"}`:     false,
		`["api_key"]`: false,
		`{"` + strings.Repeat("k", 200) + `":1,"api_key":"sk"}`: true,

		`{"api_key":null}`:                false,
		`{"api_key" : "" }`:               false,
		`{"api_key":"a\""}`:               true,
		`{"api_key":"sk"}`:                true,
		`{"user_config":{}}`:              true,
		`{"api_key":null,"api_key":"sk"}`: true,
		`{"model":"m","api_key":nul}`:     true, // not JSON, but its bytes go along
	} {
		got, err := readHoldsCredentials(iotest.OneByteReader(strings.NewReader(body)))
		require.NoError(t, err)
		assert.Equal(t, want, got, "a byte at a time: %s", body)
		assert.Equal(t, want, holdsCredentials([]byte(body)), body)
	}
}

// longBodyClient is a client through a Fallback from r's primary to its
// second target that holds at most 1024 bytes of a body.
func longBodyClient(t *testing.T, r *mapRig) *http.Client {
	t.Helper()
	f, err := NewFallback(FallbackConfig{MaxBufferedBody: 1024, Targets: []Target{
		{Name: "primary", BaseURL: r.primary.URL},
		{Name: "second", BaseURL: r.second.URL},
	}})
	require.NoError(t, err)
	c := &http.Client{Transport: f.Wrap(nil)}
	t.Cleanup(c.CloseIdleConnections)
	return c
}

// sendToPrimary posts body to r's primary through client and returns the
// answer, its body read and closed.
func sendToPrimary(t *testing.T, client *http.Client, r *mapRig, body string) *http.Response {
	t.Helper()
	resp, err := client.Post(r.primary.URL+"/chat/completions", "application/json", strings.NewReader(body))
	require.NoError(t, err)
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}
