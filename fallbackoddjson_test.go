package httpguard

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// oddJSONRig is a Fallback from a primary that answers 503 to a second
// target that maps model big to small, both real servers.
func oddJSONRig(t *testing.T) (c *http.Client, primary, second *server) {
	primary = newServer(t, func(w http.ResponseWriter, _ *http.Request, _ int) { w.WriteHeader(http.StatusServiceUnavailable) })
	second = newServer(t, func(w http.ResponseWriter, _ *http.Request, _ int) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"choices":[]}`)
	})
	f, err := NewFallback(FallbackConfig{Targets: []Target{
		{Name: "primary", BaseURL: primary.URL + "/v1"},
		{Name: "second", BaseURL: second.URL + "/v1", Models: map[string]string{"big": "small"}},
	}})
	require.NoError(t, err)
	return clientFor(t, f), primary, second
}

// A body that begins with a UTF-8 byte order mark is read by Python's
// json.loads (FastAPI's servers), which skips it: its model is mapped, the
// mark and every other byte kept. It went to the target unmapped, naming
// the model the target's Models say it must not be asked for.
func TestFallbackMapsTheModelOfABodyAfterAByteOrderMark(t *testing.T) {
	c, primary, second := oddJSONRig(t)
	const bom = "\xef\xbb\xbf"
	resp, err := c.Post(primary.URL+"/v1/chat/completions", "application/json", strings.NewReader(bom+`{"model":"big","n":1}`))
	require.NoError(t, err)
	resp.Body.Close()

	assert.Equal(t, "second", resp.Header.Get(TargetHeader))
	second.mu.Lock()
	defer second.mu.Unlock()
	require.Len(t, second.bodies, 1)
	assert.Equal(t, bom+`{"model":"small","n":1}`, second.bodies[0])
}

// A body that is no one JSON object, but begins with one naming a model,
// is read so by Go's json.Decoder (gin's binding, Go servers), which
// leaves what follows: such a server ran the model the body began with,
// unmapped. It goes to no target with Models, as a body naming two models
// does; the caller gets the primary's answer.
func TestFallbackSendsABodyThatBeginsWithAnObjectToNoTargetWithModels(t *testing.T) {
	c, primary, second := oddJSONRig(t)
	for _, body := range []string{`{"model":"big"}{"model":"small"}`, `{"model":"big"} trailing`, `{"Model":"big"}]`} {
		resp, err := c.Post(primary.URL+"/v1/chat/completions", "application/json", strings.NewReader(body))
		require.NoError(t, err, body)
		resp.Body.Close()

		assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode, body)
		assert.Equal(t, "primary", resp.Header.Get(TargetHeader), body)
	}
	assert.Zero(t, second.hits.Load(), "nothing reached the second target")

	// A body no parser reads as an object naming a model goes as it is.
	resp, err := c.Post(primary.URL+"/v1/chat/completions", "application/json", strings.NewReader(`{"model":"big"`))
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, "second", resp.Header.Get(TargetHeader))
}
