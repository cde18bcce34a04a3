package httpguard

import (
	"bytes"
	"io"
	"mime/multipart"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// multipartBody returns a multipart/form-data upload with the fields, in
// order, then an audio file, and its Content-Type.
func multipartBody(t *testing.T, audio string, fields ...[2]string) ([]byte, string) {
	t.Helper()
	var b bytes.Buffer
	mw := multipart.NewWriter(&b)
	for _, f := range fields {
		require.NoError(t, mw.WriteField(f[0], f[1]))
	}
	w, err := mw.CreateFormFile("file", "speech.mp3")
	require.NoError(t, err)
	_, err = w.Write([]byte(audio))
	require.NoError(t, err)
	require.NoError(t, mw.Close())
	return b.Bytes(), mw.FormDataContentType()
}

// postForm sends body with the Content-Type contentType through r's
// Fallback, to the transcriptions path, and returns the target that
// answered.
func (r *mapRig) postForm(t *testing.T, f http.RoundTripper, body []byte, contentType string) string {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, r.primary.URL+"/audio/transcriptions", bytes.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", contentType)
	c := r.client
	if f != nil {
		c = &http.Client{Transport: f}
		t.Cleanup(c.CloseIdleConnections)
	}
	resp, err := c.Do(req)
	require.NoError(t, err)
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.Header.Get(TargetHeader)
}

// A form's fields were not read for credentials: an upload to
// /audio/transcriptions with an api_key field, which LiteLLM reads as it
// reads a JSON body's (any body whose Content-Type holds "form"), went to
// the next target, key and all. Its fields are read as a JSON body's
// members are.
func TestFallbackSendsAFormHoldingCredentialsToNoOtherTarget(t *testing.T) {
	bodies := map[string][2]string{}
	for _, field := range [][2]string{
		{"api_key", "sk-primary-body"},
		{"user_config", `{"model_list":[]}`},
		{"vertex_credentials", `{"private_key":"-----BEGIN"}`},
		{"AWS_Session_Token", "primary"},
	} {
		body, ct := multipartBody(t, "ID3 audio", [2]string{"model", "whisper-1"}, field)
		bodies["multipart "+field[0]] = [2]string{string(body), ct}
	}
	const hand = "--b\r\nContent-Disposition: form-data; name=model\r\n\r\nwhisper-1\r\n" +
		"--b\r\nContent-Disposition: attachment; name=\"api_key\"\r\n\r\nsk-primary\r\n--b--\r\n"
	bodies["multipart, attachment"] = [2]string{hand, `multipart/form-data; boundary=b`}
	bodies["multipart, name in RFC 2231"] = [2]string{strings.ReplaceAll(hand, `name="api_key"`, `name*=UTF-8''api%5Fkey`), `Multipart/Form-Data; boundary="b"`}
	for name, body := range map[string]string{
		"urlencoded":          "model=whisper-1&api_key=sk-primary",
		"urlencoded, escaped": "model=whisper-1&api%5Fkey=sk-primary",
		"urlencoded, plus":    "model=whisper-1&aws+secret_access_key=s",
		"urlencoded, at ';'":  "model=whisper-1;api_key=sk-primary",
		"urlencoded, long":    strings.Repeat("x", 300) + "=sk-primary",
	} {
		bodies[name] = [2]string{body, "application/x-www-form-urlencoded"}
	}
	for name, c := range bodies {
		r := newMapRig(t)
		assert.Equal(t, "primary", r.postForm(t, nil, []byte(c[0]), c[1]), name)
		assert.Empty(t, r.second.received(), name)
		assert.Empty(t, r.third.received(), name)
	}
}

// A form without credentials goes along: fields that only look like them
// (max_tokens, prompt_cache_key), and an empty api_key.
func TestFallbackSendsAFormWithoutCredentialsToTheNextTarget(t *testing.T) {
	multi, ct := multipartBody(t, "ID3 audio", [2]string{"model", "whisper-1"}, [2]string{"api_key", ""}, [2]string{"max_tokens", "5"})
	for name, c := range map[string][2]string{
		"multipart":  {string(multi), ct},
		"urlencoded": {"model=whisper-1&api_key=&prompt_cache_key=k&max_tokens=5;api_key", "application/x-www-form-urlencoded; charset=utf-8"},
	} {
		r := newMapRig(t)
		assert.Equal(t, "second", r.postForm(t, nil, []byte(c[0]), c[1]), name)
		assert.Equal(t, []string{c[0]}, r.second.received(), name)
	}
}

// A form that does not parse cannot be read for credentials: it goes to no
// target but the primary.
func TestFallbackSendsAFormItCannotReadToNoOtherTarget(t *testing.T) {
	multi, ct := multipartBody(t, "ID3 audio", [2]string{"model", "whisper-1"})
	for name, c := range map[string][2]string{
		"cut":                   {string(multi[:len(multi)-10]), ct},
		"no boundary":           {string(multi), "multipart/form-data"},
		"another boundary":      {string(multi), "multipart/form-data; boundary=other"},
		"a type that no parser": {string(multi), `multipart/form-data; boundary="b`},
	} {
		r := newMapRig(t)
		assert.Equal(t, "primary", r.postForm(t, nil, []byte(c[0]), c[1]), name)
		assert.Empty(t, r.second.received(), name)
		assert.Empty(t, r.third.received(), name)
	}
}

// A form longer than MaxBufferedBody is read to its end for them, a field
// after the file included; one compressed with gzip is read decompressed.
func TestFallbackReadsALongOrCompressedFormForCredentials(t *testing.T) {
	long, ct := multipartBody(t, strings.Repeat("a", 64<<10), [2]string{"model", "whisper-1"})
	long = bytes.Replace(long, []byte("--\r\n"), []byte("\r\nContent-Disposition: form-data; name=\"api_key\"\r\n\r\nsk-primary\r\n--"+ct[len("multipart/form-data; boundary="):]+"--\r\n"), 1)
	r := newMapRig(t)
	f, err := NewFallback(FallbackConfig{MaxBufferedBody: 1024, Targets: []Target{
		{Name: "primary", BaseURL: r.primary.URL},
		{Name: "second", BaseURL: r.second.URL},
	}})
	require.NoError(t, err)
	assert.Equal(t, "primary", r.postForm(t, f.Wrap(nil), long, ct))
	assert.Empty(t, r.second.received())

	clean, ct := multipartBody(t, strings.Repeat("a", 64<<10), [2]string{"model", "whisper-1"})
	assert.Equal(t, "second", r.postForm(t, f.Wrap(nil), clean, ct), "a long form without credentials goes along")

	body, ct := multipartBody(t, "ID3 audio", [2]string{"model", "whisper-1"}, [2]string{"api_key", "sk-primary"})
	req, err := http.NewRequest(http.MethodPost, r.primary.URL+"/audio/transcriptions", bytes.NewReader(gzipOf(t, string(body))))
	require.NoError(t, err)
	req.Header.Set("Content-Type", ct)
	req.Header.Set("Content-Encoding", "gzip")
	resp, err := r.client.Do(req)
	require.NoError(t, err)
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	assert.Equal(t, "primary", resp.Header.Get(TargetHeader))
	assert.Zero(t, len(r.third.received()))
}

// A JSON body whose Content-Type merely holds "form" in another word is
// read as JSON.
func TestFormOfReadsOnlyFormsAsForms(t *testing.T) {
	for ct, want := range map[string]formKind{
		"":                                  notForm,
		"application/json":                  notForm,
		"application/vnd.platform+json":     notForm,
		"multipart/form-data; boundary=x":   multipartForm,
		"application/x-www-form-urlencoded": urlencodedForm,
		"multipart/form-data":               unreadableForm,
		"form; ;":                           unreadableForm,
	} {
		got, _ := formOf(http.Header{"Content-Type": {ct}})
		assert.Equal(t, want, got, ct)
	}
	got, _ := formOf(http.Header{"Content-Type": {"application/json"}, "content-type": {"multipart/form-data; boundary=x"}})
	assert.Equal(t, unreadableForm, got, "two types, one a form")
}
