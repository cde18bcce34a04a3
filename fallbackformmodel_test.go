package httpguard

import (
	"bytes"
	"io"
	"mime"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// formReceived is what a target received of a form: its body, its
// declared length, and the model and file a Go server reads from it.
type formReceived struct {
	body          string
	contentLength int64
	model, file   string
}

// formRecorder is a target that records the forms it receives, answering
// 503 to the first fail of them and 200 after.
type formRecorder struct {
	*httptest.Server
	mu    sync.Mutex
	fail  int
	forms []formReceived
}

func newFormRecorder(t *testing.T, fail int) *formRecorder {
	r := &formRecorder{fail: fail}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		got := formReceived{body: string(b), contentLength: req.ContentLength}
		req.Body = io.NopCloser(bytes.NewReader(b))
		if err := req.ParseMultipartForm(1 << 20); err == nil {
			got.model = req.FormValue("model")
			if f, _, err := req.FormFile("file"); err == nil {
				data, _ := io.ReadAll(f)
				got.file = string(data)
			}
		} else if err := req.ParseForm(); err == nil {
			got.model = req.PostFormValue("model")
		}
		r.mu.Lock()
		r.forms = append(r.forms, got)
		status := http.StatusOK
		if len(r.forms) <= r.fail {
			status = http.StatusServiceUnavailable
		}
		r.mu.Unlock()
		w.WriteHeader(status)
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *formRecorder) received() []formReceived {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]formReceived(nil), r.forms...)
}

// formRig is a primary answering 503, a second target mapping "small" to
// "big" (failing its first fail requests), and a third mapping none.
type formRig struct {
	primary       *httptest.Server
	second, third *formRecorder
	rt            http.RoundTripper
}

func newFormRig(t *testing.T, fail int, primaryModels map[string]string) *formRig {
	r := &formRig{second: newFormRecorder(t, fail), third: newFormRecorder(t, 0)}
	r.primary = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		io.Copy(io.Discard, req.Body)
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	t.Cleanup(r.primary.Close)
	f, err := NewFallback(FallbackConfig{Targets: []Target{
		{Name: "primary", BaseURL: r.primary.URL, Models: primaryModels},
		{Name: "second", BaseURL: r.second.URL, Models: map[string]string{"small": "big"}},
		{Name: "third", BaseURL: r.third.URL},
	}})
	require.NoError(t, err)
	retrier, err := NewRetrier(RetryPolicy{MaxRetries: 1, BaseDelay: time.Microsecond, MaxDelay: time.Microsecond})
	require.NoError(t, err)
	base := &http.Transport{}
	t.Cleanup(base.CloseIdleConnections)
	r.rt = Chain(base, f, retrier)
	return r
}

// post sends body with the Content-Type contentType (and the
// Content-Encoding encoding, if any) to the transcriptions path, and
// returns the target that answered, or the error.
func (r *formRig) post(t *testing.T, body []byte, contentType, encoding string) (string, error) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, r.primary.URL+"/audio/transcriptions", bytes.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", contentType)
	if encoding != "" {
		req.Header.Set("Content-Encoding", encoding)
	}
	resp, err := r.rt.RoundTrip(req)
	if err != nil {
		return "", err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.Header.Get(TargetHeader), nil
}

// modelPartOf returns the bytes of a multipart model part naming model.
func modelPartOf(model string) string {
	return "Content-Disposition: form-data; name=\"model\"\r\n\r\n" + model + "\r\n"
}

// A form's model was sent unchanged to a target whose Models map it: an
// upload to /audio/transcriptions naming "small" asked a target for
// "small", which its Models say it must not be asked for. The model field
// is rewritten, every other byte kept, the boundary too, with the length
// and GetBody of the body rewritten (a retry sends it again).
func TestFallbackMapsTheModelOfAForm(t *testing.T) {
	first, ct := multipartBody(t, "ID3\x00\r\n--audio", [2]string{"model", "small"}, [2]string{"language", "en"})
	_, params, err := mime.ParseMediaType(ct)
	require.NoError(t, err)
	b := params["boundary"]
	last := "--" + b + "\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.mp3\"\r\nContent-Type: audio/mpeg\r\n\r\nID3\r\n" +
		"--" + b + "\r\n" + modelPartOf("small") + "--" + b + "--\r\n"
	twice := "--" + b + "\r\n" + modelPartOf("small") + "--" + b + "\r\ncontent-disposition: form-data; name=model\r\n\r\nsmall\r\n--" + b + "--"
	for name, c := range map[string]struct{ body, ct, want, file string }{
		"multipart, model first": {string(first), ct, strings.Replace(string(first), modelPartOf("small"), modelPartOf("big"), 1), "ID3\x00\r\n--audio"},
		"multipart, model last":  {last, ct, strings.Replace(last, modelPartOf("small"), modelPartOf("big"), 1), "ID3"},
		"multipart, twice":       {twice, ct, strings.ReplaceAll(twice, "\r\n\r\nsmall\r\n", "\r\n\r\nbig\r\n"), ""},
		"multipart, an epilogue": {last + "\r\n", ct, strings.Replace(last, modelPartOf("small"), modelPartOf("big"), 1) + "\r\n", "ID3"},
		"urlencoded":             {"prompt=hi%20there&model=small&temperature=0", "application/x-www-form-urlencoded", "prompt=hi%20there&model=big&temperature=0", ""},
		"urlencoded, escaped":    {"%6Dodel=sm%61ll&x=1", "application/x-www-form-urlencoded; charset=utf-8", "%6Dodel=big&x=1", ""},
	} {
		r := newFormRig(t, 1, nil)
		got, err := r.post(t, []byte(c.body), c.ct, "")
		require.NoError(t, err, name)
		assert.Equal(t, "second", got, name)
		forms := r.second.received()
		require.Len(t, forms, 2, name)
		for _, f := range forms { // the first attempt and its retry
			assert.Equal(t, c.want, f.body, name)
			assert.EqualValues(t, len(c.want), f.contentLength, name)
			assert.Equal(t, "big", f.model, name)
			assert.Equal(t, c.file, f.file, name)
		}
	}
}

// A form whose model cannot be read safely goes to no target with Models,
// as a JSON body's does: it moves on to the next target, unchanged.
func TestFallbackSendsAFormWhoseModelItCannotReadToNoTargetWithModels(t *testing.T) {
	const b = "b0und"
	multi := func(parts ...string) string {
		s := ""
		for _, p := range parts {
			s += "--" + b + "\r\n" + p
		}
		return s + "--" + b + "--\r\n"
	}
	const ct = "multipart/form-data; boundary=" + b
	file := "Content-Disposition: form-data; name=\"file\"; filename=\"a.mp3\"\r\n\r\nID3\r\n"
	for name, c := range map[string][2]string{
		"two models":              {multi(modelPartOf("small"), file, modelPartOf("other")), ct},
		"a transfer encoding":     {multi("Content-Transfer-Encoding: quoted-printable\r\n" + modelPartOf("sm=61ll")), ct},
		"a file named model":      {multi("Content-Disposition: form-data; name=\"model\"; filename=\"m\"\r\n\r\nsmall\r\n"), ct},
		"an attachment":           {multi("Content-Disposition: attachment; name=\"model\"\r\n\r\nsmall\r\n"), ct},
		"another charset":         {multi("Content-Type: text/plain; charset=utf-16\r\n" + modelPartOf("small")), ct},
		"a preamble":              {"preamble\r\n" + multi(modelPartOf("small")), ct},
		"bare line feeds":         {strings.ReplaceAll(multi(modelPartOf("small")), "\r\n", "\n"), ct},
		"a folded header":         {multi("Content-Disposition: form-data;\r\n name=\"model\"\r\n\r\nsmall\r\n"), ct},
		"the boundary in a part":  {multi(file, "Content-Disposition: form-data; name=\"x\"\r\n\r\na --"+b+" b\r\n", modelPartOf("small")), ct},
		"padding after delimiter": {strings.Replace(multi(modelPartOf("small")), b+"\r\n", b+" \r\n", 1), ct},
		"the boundary after it":   {multi(modelPartOf("small")) + "--" + b + "--\r\n", ct},
		"urlencoded, two models":  {"model=small&model=other", "application/x-www-form-urlencoded"},
		"urlencoded, bad escape":  {"model=sm%zzall", "application/x-www-form-urlencoded"},
		"urlencoded, raw UTF-8":   {"model=small\u00e9", "application/x-www-form-urlencoded"},
		"urlencoded, also JSON":   {`{"model":"small","x":"&model=small"}`, "application/x-www-form-urlencoded"},
	} {
		r := newFormRig(t, 0, nil)
		got, err := r.post(t, []byte(c[0]), c[1], "")
		require.NoError(t, err, name)
		assert.Equal(t, "third", got, name)
		assert.Empty(t, r.second.received(), name)
		if third := r.third.received(); assert.Len(t, third, 1, name) {
			assert.Equal(t, c[0], third[0].body, name)
		}
	}
}

// A compressed form cannot be read for its model either; and a primary
// with Models refuses a form whose model it cannot read, unsent.
func TestFallbackRefusesAFormWhoseModelItCannotReadForAPrimaryWithModels(t *testing.T) {
	body, ct := multipartBody(t, "ID3", [2]string{"model", "small"})
	r := newFormRig(t, 0, nil)
	got, err := r.post(t, gzipOf(t, string(body)), ct, "gzip")
	require.NoError(t, err)
	assert.Equal(t, "third", got)
	assert.Empty(t, r.second.received())

	r = newFormRig(t, 0, map[string]string{"alias": "small"})
	_, err = r.post(t, []byte("model=alias&model=other"), "application/x-www-form-urlencoded", "")
	require.Error(t, err)
	assert.True(t, IsRefusal(err))
	assert.ErrorIs(t, err, ErrModelUnreadable)
	assert.Empty(t, r.second.received())
	assert.Empty(t, r.third.received())
}

// A form that names no model, or one the Models do not map, goes as it
// is; so does a JSON body sent as a urlencoded form (curl -d), its model
// mapped as JSON.
func TestFallbackSendsAFormItNeedNotMapUnchanged(t *testing.T) {
	none, ct := multipartBody(t, "ID3", [2]string{"purpose", "assistants"})
	other, otherType := multipartBody(t, "ID3", [2]string{"model", "whisper-1"})
	for name, c := range map[string][3]string{
		"multipart, no model":    {string(none), ct, string(none)},
		"multipart, not mapped":  {string(other), otherType, string(other)},
		"urlencoded, not mapped": {"model=whisper-1&x=%zz", "application/x-www-form-urlencoded", "model=whisper-1&x=%zz"},
		"JSON sent as a form":    {`{"model":"small","messages":[]}`, "application/x-www-form-urlencoded", `{"model":"big","messages":[]}`},
	} {
		r := newFormRig(t, 0, nil)
		got, err := r.post(t, []byte(c[0]), c[1], "")
		require.NoError(t, err, name)
		assert.Equal(t, "second", got, name)
		if second := r.second.received(); assert.Len(t, second, 1, name) {
			assert.Equal(t, c[2], second[0].body, name)
		}
	}
}
