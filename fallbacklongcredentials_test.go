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

// A body longer than MaxBufferedBody whose credentials come after its
// first MaxBufferedBody bytes, as the OpenAI SDKs write them when they are
// passed in extra_body after a long message list (an image, a long
// context), went to the next target with them: only the first
// MaxBufferedBody bytes were read for credentials.
func TestFallbackSendsALongBodyWithCredentialsAtItsEndToNoOtherTarget(t *testing.T) {
	for _, tail := range []string{
		`"api_key":"sk-primary"`,
		`"user_config":{"model_list":[]}`,
		// a key that spans the chunks the body is read in, longer than
		// the keys the lexer keeps whole
		`"` + strings.Repeat("x", 300) + `_api_key":"sk-primary"`,
	} {
		r := newMapRig(t)
		f, err := NewFallback(FallbackConfig{MaxBufferedBody: 1024, Targets: []Target{
			{Name: "primary", BaseURL: r.primary.URL},
			{Name: "second", BaseURL: r.second.URL},
		}})
		require.NoError(t, err)
		c := &http.Client{Transport: f.Wrap(nil)}
		t.Cleanup(c.CloseIdleConnections)
		const head = `{"model":"m","messages":[{"role":"user","content":"`
		// the last n has the key span the first 32KiB the body is read in
		for _, n := range []int{2048, 100 << 10, 32<<10 - len(head) - len(`"}],`) - 3} {
			body := head + strings.Repeat("a", n) + `"}],` + tail + `}`
			resp, err := c.Post(r.primary.URL+"/chat/completions", "application/json", strings.NewReader(body))
			require.NoError(t, err)
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			assert.Equal(t, "primary", resp.Header.Get(TargetHeader), tail[:20])
			assert.Zero(t, len(r.second.received()), "the second target got the body: %s", tail[:20])
		}
	}
}

// A long body without credentials still goes to the next target, whole.
func TestFallbackSendsALongBodyWithoutCredentialsToTheNextTarget(t *testing.T) {
	r := newMapRig(t)
	f, err := NewFallback(FallbackConfig{MaxBufferedBody: 1024, Targets: []Target{
		{Name: "primary", BaseURL: r.primary.URL},
		{Name: "second", BaseURL: r.second.URL},
	}})
	require.NoError(t, err)
	c := &http.Client{Transport: f.Wrap(nil)}
	t.Cleanup(c.CloseIdleConnections)
	body := `{"model":"m","messages":[{"role":"user","content":"` + strings.Repeat("a", 100<<10) + `"}],"max_tokens":5,"prompt_cache_key":"k"}`
	resp, err := c.Post(r.primary.URL+"/chat/completions", "application/json", strings.NewReader(body))
	require.NoError(t, err)
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	assert.Equal(t, "second", resp.Header.Get(TargetHeader))
	assert.Equal(t, []string{body}, r.second.received())
}

// Read a byte at a time, every key spans chunks: a credential's is found
// whatever its escapes, and other keys are not taken for one.
func TestReadHoldsCredentialsAcrossChunks(t *testing.T) {
	for body, want := range map[string]bool{
		`{"model":"m","api\u005fkey":"sk"}`:                   true,
		`{"model":"m","AWS_Session_Token":"x"}`:               true,
		`{"model":"m","max_tokens":5,"prompt_cache_key":"k"}`: false,
		`{"messages":[{"api_key":"nested"}],"model":"m"}`:     false,
		`["api_key"]`: false,
		`{"` + strings.Repeat("k", 200) + `":1,"api_key":"sk"}`: true,
	} {
		got, err := readHoldsCredentials(iotest.OneByteReader(strings.NewReader(body)))
		require.NoError(t, err)
		assert.Equal(t, want, got, body)
		assert.Equal(t, want, holdsCredentials([]byte(body)), body)
	}
}

// A credential's member that holds none (null, "") does not keep the
// request from the other targets: clients that write every field of a
// typed request (pydantic's model_dump without exclude_none) send
// "api_key": null and "user_config": null.
func TestFallbackSendsABodyWithEmptyCredentialMembersToTheNextTarget(t *testing.T) {
	for _, body := range []string{
		`{"model":"other","messages":[],"api_key":null,"user_config":null}`,
		`{"model":"other","messages":[],"api_key":"","aws_session_token":null}`,
	} {
		r := newMapRig(t)
		req, err := http.NewRequest(http.MethodPost, r.primary.URL+"/chat/completions", strings.NewReader(body))
		require.NoError(t, err)
		resp, err := r.client.Do(req)
		require.NoError(t, err)
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		assert.Equal(t, "second", resp.Header.Get(TargetHeader), body)
		assert.Equal(t, []string{body}, r.second.received())
	}
	for body, want := range map[string]bool{
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
