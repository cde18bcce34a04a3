package httpguard

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// bodyRecorder is a loopback server that answers 200 and keeps the bodies
// it received.
type bodyRecorder struct {
	*httptest.Server
	mu     sync.Mutex
	bodies []string
}

func newBodyRecorder(t *testing.T) *bodyRecorder {
	r := &bodyRecorder{}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.bodies = append(r.bodies, string(b))
		r.mu.Unlock()
		w.Write([]byte(`{}`))
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *bodyRecorder) received() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.bodies...)
}

// mapRig is a primary answering 503, a second target mapping "small" to
// "big", and a third mapping none.
type mapRig struct {
	primary       *httptest.Server
	second, third *bodyRecorder
	client        *http.Client
}

func newMapRig(t *testing.T) *mapRig {
	r := &mapRig{second: newBodyRecorder(t), third: newBodyRecorder(t)}
	r.primary = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		io.Copy(io.Discard, req.Body)
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	t.Cleanup(r.primary.Close)
	f, err := NewFallback(FallbackConfig{Targets: []Target{
		{Name: "primary", BaseURL: r.primary.URL},
		{Name: "second", BaseURL: r.second.URL, Models: map[string]string{"small": "big"}},
		{Name: "third", BaseURL: r.third.URL},
	}})
	require.NoError(t, err)
	r.client = &http.Client{Transport: f.Wrap(nil)}
	t.Cleanup(r.client.CloseIdleConnections)
	return r
}

func (r *mapRig) post(t *testing.T, body []byte, encoding string) string {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, r.primary.URL+"/chat/completions", bytes.NewReader(body))
	require.NoError(t, err)
	if encoding != "" {
		req.Header.Set("Content-Encoding", encoding)
	}
	resp, err := r.client.Do(req)
	require.NoError(t, err)
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	return resp.Header.Get(TargetHeader)
}

// A body whose model the Fallback reads, but that names other fields in
// ways a Budget refuses (max_tokens twice, a string for a number), still
// has its model mapped: the target is never asked for the model its Models
// map away from.
func TestFallbackMapsTheModelOfABodyWhoseOtherFieldsAreAmbiguous(t *testing.T) {
	for _, body := range []string{
		`{"model":"small","max_tokens":5,"max_tokens":6,"messages":[]}`,
		`{"model":"small","max_tokens":"5","messages":[]}`,
		`{"model":"small","stream":"yes","messages":[]}`,
	} {
		r := newMapRig(t)
		assert.Equal(t, "second", r.post(t, []byte(body), ""), body)
		assert.NotContains(t, r.second.received()[0], `"small"`, body)
		assert.Contains(t, r.second.received()[0], `"model":"big"`, body)
	}
}

// A model named twice with one value, or in another case ("Model", which
// encoding/json reads as model), is mapped in every place it is named.
func TestFallbackMapsEverySpellingOfAModelNamedOnce(t *testing.T) {
	for body, want := range map[string]string{
		`{"model":"small","model":"small","messages":[]}`: `{"model":"big","model":"big","messages":[]}`,
		`{"Model":"small","messages":[]}`:                 `{"Model":"big","messages":[]}`,
		`{"model":"small","MODEL":"sm\u0061ll"}`:          `{"model":"big","MODEL":"big"}`,
	} {
		r := newMapRig(t)
		assert.Equal(t, "second", r.post(t, []byte(body), ""), body)
		assert.Equal(t, []string{want}, r.second.received(), body)
	}
}

// A body whose model the Fallback cannot read, because it names two, or
// because it is compressed (Content-Encoding: gzip), goes to no target
// with Models, as a body too long to read does: the request moves on past
// it.
func TestFallbackSendsABodyWhoseModelItCannotReadToNoTargetWithModels(t *testing.T) {
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte(`{"model":"small","messages":[]}`))
	require.NoError(t, zw.Close())
	for _, c := range []struct {
		body     []byte
		encoding string
	}{
		{gz.Bytes(), "gzip"},
		{[]byte(`{"model":"other","model":"small","messages":[]}`), ""},
		{[]byte(`{"model":"small","Model":"other","messages":[]}`), ""},
	} {
		r := newMapRig(t)
		assert.Equal(t, "third", r.post(t, c.body, c.encoding), string(c.body))
		assert.Empty(t, r.second.received(), "the second target is not asked for a model its Models may map: %s", c.body)
	}
}

// urlRecorder is a loopback server that answers 200 and keeps the
// escaped paths and queries it received.
type urlRecorder struct {
	*httptest.Server
	mu   sync.Mutex
	urls []string
}

func newURLRecorder(t *testing.T) *urlRecorder {
	r := &urlRecorder{}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		io.Copy(io.Discard, req.Body)
		r.mu.Lock()
		r.urls = append(r.urls, req.URL.RequestURI())
		r.mu.Unlock()
		w.Write([]byte(`{}`))
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *urlRecorder) received() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.urls...)
}

// The model a request's path names (an Azure OpenAI deployment, an
// engine) or its query string names (model=…, which LiteLLM runs) runs the
// request whatever its body says: a target's Models map it too, so that the
// target is not asked for the model they map away from (an Azure resource
// in another region, whose deployment has another name, answers 404).
func TestFallbackMapsTheModelThePathOrTheQueryNames(t *testing.T) {
	for path, want := range map[string]string{
		"/openai/deployments/small/chat/completions?api-version=2024-10-21": "/openai/deployments/big/chat/completions?api-version=2024-10-21",
		"/openai/deployments/other/chat/completions":                        "/openai/deployments/other/chat/completions",
		"/v1/engines/small/completions":                                     "/v1/engines/big/completions",
		"/v1/chat/completions?model=small&x=1":                              "/v1/chat/completions?model=big&x=1",
		"/v1/chat/completions?model=other":                                  "/v1/chat/completions?model=other",
	} {
		primary := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			io.Copy(io.Discard, req.Body)
			w.WriteHeader(http.StatusServiceUnavailable)
		}))
		t.Cleanup(primary.Close)
		second := newURLRecorder(t)
		f, err := NewFallback(FallbackConfig{Targets: []Target{
			{Name: "primary", BaseURL: primary.URL},
			{Name: "second", BaseURL: second.URL, Models: map[string]string{"small": "big"}},
		}})
		require.NoError(t, err)
		c := &http.Client{Transport: f.Wrap(nil)}
		t.Cleanup(c.CloseIdleConnections)

		resp, err := c.Post(primary.URL+path, "application/json", bytes.NewReader([]byte(`{"messages":[]}`)))

		require.NoError(t, err)
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		assert.Equal(t, "second", resp.Header.Get(TargetHeader), path)
		assert.Equal(t, []string{want}, second.received(), path)
	}
}

// A query string naming two models, which servers read differently, is
// one whose model the Fallback cannot read.
func TestFallbackSendsARequestWhoseQueryNamesTwoModelsToNoTargetWithModels(t *testing.T) {
	r := newMapRig(t)
	req, err := http.NewRequest(http.MethodPost, r.primary.URL+"/v1/chat/completions?model=small&model=other", bytes.NewReader([]byte(`{"messages":[]}`)))
	require.NoError(t, err)
	resp, err := r.client.Do(req)
	require.NoError(t, err)
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	assert.Equal(t, "third", resp.Header.Get(TargetHeader))
	assert.Empty(t, r.second.received())
}
