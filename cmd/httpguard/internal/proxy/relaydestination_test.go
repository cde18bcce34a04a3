package proxy

import (
	"bytes"
	"encoding/json"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// destinationRelay is a loopback LiteLLM that honours a body's api_base or
// base_url, and a user_config's model_list entry's, as LiteLLM's proxy
// does where client-side credentials are allowed (and, with any api_key
// beside them, in its releases before it refused them): it sends the
// request there with the key it holds. It returns the hosts it was told to
// send the key to.
func destinationRelay(t *testing.T) (*httptest.Server, func() []string) {
	var mu sync.Mutex
	var sentTo []string
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body map[string]any
		json.NewDecoder(r.Body).Decode(&body)
		for k, v := range body {
			if s, ok := v.(string); ok && (k == "api_base" || k == "base_url") {
				mu.Lock()
				sentTo = append(sentTo, s+" with "+r.Header.Get("Authorization"))
				mu.Unlock()
			}
		}
		if uc, ok := body["user_config"].(map[string]any); ok {
			ml, _ := uc["model_list"].([]any)
			for _, d := range ml {
				p, _ := d.(map[string]any)["litellm_params"].(map[string]any)
				if s, ok := p["api_base"].(string); ok {
					mu.Lock()
					sentTo = append(sentTo, s+" with "+r.Header.Get("Authorization"))
					mu.Unlock()
				}
			}
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"choices":[],"usage":{"prompt_tokens":8,"completion_tokens":1}}`)
	}))
	t.Cleanup(up.Close)
	return up, func() []string { mu.Lock(); defer mu.Unlock(); return append([]string(nil), sentTo...) }
}

// Was a bug: a tenant's body could name where a relay upstream sends the
// request: LiteLLM sends it to a body's api_base or base_url (or to a
// user_config model's) with the credentials it holds for the provider, so
// the real key's account reached a host of the tenant's choosing, as the
// x-portkey-custom-host header the proxy drops from tenants' requests
// would have sent it. A tenant without a model list or budget passed every
// body check, user_config's included.
func TestATenantCannotNameWhereARelaySendsTheRealKey(t *testing.T) {
	up, sentTo := destinationRelay(t)
	r := start(t, Config{Upstreams: []Upstream{{Prefix: "/v1", URL: mustURL(t, up.URL), KeyEnv: "OPENAI_KEY"}}, Getenv: realKeys,
		Tenants: []Tenant{{Name: "free", KeySHA256: keyHash("vk-free")}}})
	for body, param := range map[string]string{
		`{"model":"gpt-4.1","api_base":"https://collector.example/v1","messages":[]}`:                                                                                              "api_base",
		`{"model":"gpt-4.1","Base_URL":"https://collector.example/v1","messages":[]}`:                                                                                              "Base_URL",
		`{"model":"gpt-4.1","user_config":{"model_list":[{"model_name":"gpt-4.1","litellm_params":{"model":"gpt-4.1","api_base":"https://collector.example/v1"}}]},"messages":[]}`: "user_config",
	} {
		resp, out := r.post(t, "/v1/chat/completions", body, "Authorization", "Bearer vk-free")
		require.Equal(t, http.StatusBadRequest, resp.StatusCode, "%s: %s", body, out)
		_, code, _ := errorOf(t, out)
		assert.Equal(t, "destination_not_allowed", code, body)
		assert.Equal(t, `"`+param+`"`, jsonString(t, out, "error", "param"), body)
	}
	// A relay reads a form's fields as a JSON body's (LiteLLM's audio and
	// image endpoints).
	var form bytes.Buffer
	mw := multipart.NewWriter(&form)
	mw.WriteField("model", "whisper-1")
	mw.WriteField("API_BASE", "https://collector.example/v1")
	fw, _ := mw.CreateFormFile("file", "a.wav")
	fw.Write([]byte("RIFF"))
	mw.Close()
	for body, ct := range map[string]string{form.String(): mw.FormDataContentType(),
		"model=whisper-1&base_url=https%3A%2F%2Fcollector.example%2Fv1": "application/x-www-form-urlencoded"} {
		resp, out := r.post(t, "/v1/audio/transcriptions", body, "Authorization", "Bearer vk-free", "Content-Type", ct)
		require.Equal(t, http.StatusBadRequest, resp.StatusCode, "%s: %s", ct, out)
		_, code, _ := errorOf(t, out)
		assert.Equal(t, "destination_not_allowed", code, ct)
	}
	assert.Empty(t, sentTo(), "the real key went to no host a tenant named")

	resp, out := r.post(t, "/v1/chat/completions", `{"model":"gpt-4.1","api_base":null,"messages":[]}`, "Authorization", "Bearer vk-free")
	assert.Equal(t, http.StatusOK, resp.StatusCode, "a null api_base names no host: %s", out)

	// Without tenants, where the upstream's headers hold the operator's
	// credential (a relay's key, which LiteLLM also takes as
	// x-litellm-api-key), the client may not name where it goes either.
	credentialed := start(t, Config{Upstreams: []Upstream{{Prefix: "/v1", URL: mustURL(t, up.URL),
		Header: http.Header{"X-Litellm-Api-Key": {"sk-litellm-operator-key-0123456789"}}}}})
	resp, out = credentialed.post(t, "/v1/chat/completions", `{"model":"gpt-4.1","api_base":"https://collector.example/v1","messages":[]}`)
	require.Equal(t, http.StatusBadRequest, resp.StatusCode, string(out))
	_, code, _ := errorOf(t, out)
	assert.Equal(t, "destination_not_allowed", code)
	assert.Empty(t, sentTo())

	// Without tenants each client sends its own key: where it goes is its own.
	open := start(t, Config{Upstreams: []Upstream{{Prefix: "/v1", URL: mustURL(t, up.URL)}}})
	resp, out = open.post(t, "/v1/chat/completions", `{"model":"gpt-4.1","api_base":"https://mine.example/v1","messages":[]}`, "Authorization", "Bearer sk-own")
	assert.Equal(t, http.StatusOK, resp.StatusCode, string(out))
	assert.Equal(t, []string{"https://mine.example/v1 with Bearer sk-own"}, sentTo())
}

// Was a bug: a urlencoded form was read with net/url, which drops a pair
// holding a ';', while python-multipart (Starlette's and so LiteLLM's form
// parser) also splits fields at a ';': "prompt=a cat;api_base=https://…"
// named a host to LiteLLM, and nothing to the proxy's check.
func TestAFormFieldAfterASemicolonCannotNameWhereARelaySendsTheRealKey(t *testing.T) {
	var mu sync.Mutex
	var sentTo []string
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		for _, pair := range strings.FieldsFunc(string(body), func(c rune) bool { return c == '&' || c == ';' }) { // as python-multipart splits
			if name, value, _ := strings.Cut(pair, "="); strings.EqualFold(name, "api_base") {
				mu.Lock()
				sentTo = append(sentTo, value)
				mu.Unlock()
			}
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"data":[]}`)
	}))
	t.Cleanup(up.Close)
	r := start(t, Config{Upstreams: []Upstream{{Prefix: "/v1", URL: mustURL(t, up.URL), KeyEnv: "OPENAI_KEY"}}, Getenv: realKeys,
		Tenants: []Tenant{{Name: "free", KeySHA256: keyHash("vk-free")}}})
	for _, body := range []string{"model=dall-e-3&prompt=a+cat;api_base=https%3A%2F%2Fcollector.example%2Fv1", "prompt=a+cat;API_BASE=https://collector.example/v1"} {
		resp, out := r.post(t, "/v1/images/generations", body, "Authorization", "Bearer vk-free", "Content-Type", "application/x-www-form-urlencoded")
		require.Equal(t, http.StatusBadRequest, resp.StatusCode, "%s: %s", body, out)
		_, code, _ := errorOf(t, out)
		assert.Equal(t, "destination_not_allowed", code, body)
	}
	mu.Lock()
	defer mu.Unlock()
	assert.Empty(t, sentTo, "the real key went to no host a tenant named")
}

// Was a bug: a JSON body holding NaN, Infinity or -Infinity is not JSON
// to net/http's encoding/json, so the proxy read nothing in it, while
// Python's json module (LiteLLM's fallback when orjson refuses a body)
// reads those numbers: the body's api_base named a host to LiteLLM, which
// sends the request there with the provider key it holds.
func TestANonStandardJSONNumberCannotHideWhereARelaySendsTheRealKey(t *testing.T) {
	var mu sync.Mutex
	var sentTo []string
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw, _ := io.ReadAll(r.Body)
		// What Python's json.loads reads: NaN and ±Infinity are numbers.
		lenient := strings.NewReplacer("-Infinity", "0", "Infinity", "0", "NaN", "0").Replace(string(raw))
		var body map[string]any
		json.Unmarshal([]byte(lenient), &body)
		if s, ok := body["api_base"].(string); ok {
			mu.Lock()
			sentTo = append(sentTo, s)
			mu.Unlock()
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"choices":[],"usage":{"prompt_tokens":8,"completion_tokens":1}}`)
	}))
	t.Cleanup(up.Close)
	r := start(t, Config{Upstreams: []Upstream{{Prefix: "/v1", URL: mustURL(t, up.URL), KeyEnv: "OPENAI_KEY"}}, Getenv: realKeys,
		Tenants: []Tenant{{Name: "free", KeySHA256: keyHash("vk-free")}}})
	for _, number := range []string{"NaN", "Infinity", "-Infinity"} {
		body := `{"model":"gpt-4.1","temperature":` + number + `,"api_base":"https://collector.example/v1","messages":[]}`
		resp, out := r.post(t, "/v1/chat/completions", body, "Authorization", "Bearer vk-free")
		require.Equal(t, http.StatusBadRequest, resp.StatusCode, "%s: %s", body, out)
		_, code, _ := errorOf(t, out)
		assert.Equal(t, "destination_not_allowed", code, body)
	}
	resp, out := r.post(t, "/v1/chat/completions", `{"model":"gpt-4.1","temperature":NaN,"stop":"NaN","messages":[]}`, "Authorization", "Bearer vk-free")
	assert.Equal(t, http.StatusOK, resp.StatusCode, "a body naming no host passes: %s", out)
	mu.Lock()
	defer mu.Unlock()
	assert.Empty(t, sentTo, "the real key went to no host a tenant named")
}

func TestPythonNumbersAreReadOutsideStringsOnly(t *testing.T) {
	for in, want := range map[string]string{
		`{"a":NaN,"b":[Infinity,-Infinity]}`: `{"a":0,"b":[0,0]}`,
		`{"a":"NaN \"NaN\" \\","b":NaN}`:     `{"a":"NaN \"NaN\" \\","b":0}`,
	} {
		out, found := pythonNumbers([]byte(in))
		assert.True(t, found, in)
		assert.Equal(t, want, string(out))
	}
	_, found := pythonNumbers([]byte(`{"a":"NaN","b":1}`))
	assert.False(t, found)
}

// Was a bug: a multipart part's name was read from its first
// Content-Disposition header (mime/multipart's FormName), while Starlette's
// parser (LiteLLM's) keeps its last: a part first named "purpose", then
// "api_base", named a host to LiteLLM and nothing to the proxy's check. So
// did a part naming itself twice in one header (which mime refuses, and
// python-multipart reads), or not as form-data (which FormName skips).
func TestAPartsLastContentDispositionCannotNameWhereARelaySendsTheRealKey(t *testing.T) {
	var mu sync.Mutex
	var sentTo []string
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mr, err := r.MultipartReader()
		for err == nil {
			var part *multipart.Part
			if part, err = mr.NextPart(); err != nil {
				break
			}
			cds := part.Header["Content-Disposition"]
			if _, params, perr := mime.ParseMediaType(cds[len(cds)-1]); perr == nil && params["name"] == "api_base" { // as Starlette reads it
				v, _ := io.ReadAll(part)
				mu.Lock()
				sentTo = append(sentTo, string(v))
				mu.Unlock()
			}
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"text":"ok"}`)
	}))
	t.Cleanup(up.Close)
	r := start(t, Config{Upstreams: []Upstream{{Prefix: "/v1", URL: mustURL(t, up.URL), KeyEnv: "OPENAI_KEY"}}, Getenv: realKeys,
		Tenants: []Tenant{{Name: "free", KeySHA256: keyHash("vk-free")}}})
	for _, disposition := range []string{
		"Content-Disposition: form-data; name=\"purpose\"\r\nContent-Disposition: form-data; name=\"api_base\"", // two headers
		"Content-Disposition: form-data; name=\"purpose\"; name=\"api_base\"",                                   // two names, which mime refuses
		"Content-Disposition: attachment; name=\"api_base\"",                                                    // not form-data, to FormName
	} {
		body := "--b\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n" +
			"--b\r\n" + disposition + "\r\n\r\nhttps://collector.example/v1\r\n--b--\r\n"
		resp, out := r.post(t, "/v1/audio/transcriptions", body, "Authorization", "Bearer vk-free", "Content-Type", "multipart/form-data; boundary=b")
		require.Equal(t, http.StatusBadRequest, resp.StatusCode, "%s: %s", disposition, out)
		_, code, _ := errorOf(t, out)
		assert.Equal(t, "destination_not_allowed", code, disposition)
	}
	mu.Lock()
	defer mu.Unlock()
	assert.Empty(t, sentTo, "the real key went to no host a tenant named")
}

// Was a bug: a form whose Content-Type mime refuses (two boundaries) was
// not read for a destination at all, while Starlette's parser (LiteLLM's)
// takes the last boundary given, and the parts it delimits.
func TestAFormsSecondBoundaryCannotHideWhereARelaySendsTheRealKey(t *testing.T) {
	var mu sync.Mutex
	var sentTo []string
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ct := r.Header.Get("Content-Type")
		boundary := ct[strings.LastIndex(ct, "boundary=")+len("boundary="):] // the last, as Starlette reads it
		mr := multipart.NewReader(r.Body, boundary)
		for {
			part, err := mr.NextPart()
			if err != nil {
				break
			}
			if part.FormName() == "api_base" {
				v, _ := io.ReadAll(part)
				mu.Lock()
				sentTo = append(sentTo, string(v))
				mu.Unlock()
			}
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"text":"ok"}`)
	}))
	t.Cleanup(up.Close)
	r := start(t, Config{Upstreams: []Upstream{{Prefix: "/v1", URL: mustURL(t, up.URL), KeyEnv: "OPENAI_KEY"}}, Getenv: realKeys,
		Tenants: []Tenant{{Name: "free", KeySHA256: keyHash("vk-free")}}})
	body := "--b\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n" +
		"--b\r\nContent-Disposition: form-data; name=\"api_base\"\r\n\r\nhttps://collector.example/v1\r\n--b--\r\n"
	resp, out := r.post(t, "/v1/audio/transcriptions", body, "Authorization", "Bearer vk-free", "Content-Type", "multipart/form-data; boundary=a; boundary=b")
	require.Equal(t, http.StatusBadRequest, resp.StatusCode, string(out))
	_, code, _ := errorOf(t, out)
	assert.Equal(t, "destination_not_allowed", code)
	mu.Lock()
	defer mu.Unlock()
	assert.Empty(t, sentTo, "the real key went to no host a tenant named")
}

// Was a bug: a multipart body that mime/multipart gives up on (a part with
// more than its 10,000 headers: "multipart: message too large") was read
// for no destination, while python-multipart, Starlette's parser and so
// LiteLLM's, has no such bound: 10,001 short headers (80 KB) before a
// part's Content-Disposition named a host to LiteLLM, and nothing to the
// proxy's check.
func TestAFormPartWithManyHeadersCannotHideWhereARelaySendsTheRealKey(t *testing.T) {
	up, sentTo := destinationRelay(t) // reads JSON: it never sees the host, whatever the proxy does
	r := start(t, Config{Upstreams: []Upstream{{Prefix: "/v1", URL: mustURL(t, up.URL), KeyEnv: "OPENAI_KEY"}}, Getenv: realKeys,
		Tenants: []Tenant{{Name: "free", KeySHA256: keyHash("vk-free")}}})
	body := "--b\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n" +
		"--b\r\n" + strings.Repeat("X-A: b\r\n", 10001) + "Content-Disposition: form-data; name=\"api_base\"\r\n\r\nhttps://collector.example/v1\r\n--b--\r\n"
	resp, out := r.post(t, "/v1/audio/transcriptions", body, "Authorization", "Bearer vk-free", "Content-Type", "multipart/form-data; boundary=b")
	require.Equal(t, http.StatusBadRequest, resp.StatusCode, string(out))
	_, code, _ := errorOf(t, out)
	assert.Equal(t, "destination_not_allowed", code)
	assert.Empty(t, sentTo())
}

// Was a bug: a part's name, or a form's boundary, given as Python's email
// package reads a header's parameters (python-multipart from 0.0.7 to
// 0.0.29, Starlette's parser and so LiteLLM's, reads them with it) but
// mime does not was read for no destination: in RFC 2231's extended
// syntax with a charset other than UTF-8 or none (name*=api_base), in
// pieces beside a parameter mime refuses (name*0=api; name*1=_base; x),
// or in <> (name=<api_base>). Each named a host to LiteLLM, and nothing to
// the proxy's check.
func TestAFormParameterPythonReadsCannotHideWhereARelaySendsTheRealKey(t *testing.T) {
	var mu sync.Mutex
	var reached []string
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		reached = append(reached, r.Header.Get("Content-Type")) // each body below names api_base to python-multipart 0.0.29
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"text":"ok"}`)
	}))
	t.Cleanup(up.Close)
	r := start(t, Config{Upstreams: []Upstream{{Prefix: "/v1", URL: mustURL(t, up.URL), KeyEnv: "OPENAI_KEY"}}, Getenv: realKeys,
		Tenants: []Tenant{{Name: "free", KeySHA256: keyHash("vk-free")}}})
	form := func(boundary, disposition string) string {
		return "--" + boundary + "\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n" +
			"--" + boundary + "\r\n" + disposition + "\r\n\r\nhttps://collector.example/v1\r\n--" + boundary + "--\r\n"
	}
	refused := func(ct, body, what string) {
		t.Helper()
		resp, out := r.post(t, "/v1/audio/transcriptions", body, "Authorization", "Bearer vk-free", "Content-Type", ct)
		require.Equal(t, http.StatusBadRequest, resp.StatusCode, "%s: %s", what, out)
		_, code, _ := errorOf(t, out)
		assert.Equal(t, "destination_not_allowed", code, what)
	}
	for _, disposition := range []string{
		"Content-Disposition: form-data; name*=api_base",
		"Content-Disposition: form-data; name=\"prompt\"; name*=iso-8859-1''api%5Fbase",
		"Content-Disposition: form-data; name*1=\"_base\"; name*0=\"api\"; x",
		"Content-Disposition: form-data; name=<api_base>",
	} {
		refused("multipart/form-data; boundary=b", form("b", disposition), disposition)
	}
	hidden := form("b", `Content-Disposition: form-data; name="api_base"`)
	for ct, body := range map[string]string{
		"multipart/form-data; boundary*=b": hidden,
		// To mime, one part delimited by a, holding the parts delimited by b.
		"multipart/form-data; boundary=a; boundary*=x''b": "--a\r\nContent-Disposition: form-data; name=\"prompt\"\r\n\r\n" + hidden + "--a--\r\n",
	} {
		refused(ct, body, ct)
	}
	mu.Lock()
	assert.Empty(t, reached, "the real key went to no host a tenant named")
	mu.Unlock()

	resp, out := r.post(t, "/v1/audio/transcriptions", form("b", "Content-Disposition: form-data; name*=x''prompt"), "Authorization", "Bearer vk-free", "Content-Type", "multipart/form-data; boundary*=b")
	assert.Equal(t, http.StatusOK, resp.StatusCode, "a form naming no host passes: %s", out)
}
