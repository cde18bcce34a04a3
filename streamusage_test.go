package httpguard

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// editedBytes applies e to a request whose GetBody gives body, and returns
// what the request sends, checking that Body and GetBody agree.
func editedBytes(t *testing.T, body []byte, e bodyEdit) []byte {
	t.Helper()
	r := &http.Request{GetBody: func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }}
	e.apply(r)
	sent, err := io.ReadAll(r.Body)
	if err != nil {
		t.Fatalf("reading the edited body of %q: %v", body, err)
	}
	_ = r.Body.Close()
	again, err := r.GetBody()
	if err != nil {
		t.Fatal(err)
	}
	resent, err := io.ReadAll(chunkedReader{again, 3})
	if err != nil || !bytes.Equal(sent, resent) {
		t.Fatalf("GetBody gives %q (%v), Body gave %q", resent, err, sent)
	}
	if int64(len(sent)) != r.ContentLength {
		t.Fatalf("ContentLength %d, body %d bytes", r.ContentLength, len(sent))
	}
	return sent
}

// chunkedReader reads at most n bytes at a time.
type chunkedReader struct {
	r io.Reader
	n int
}

func (c chunkedReader) Read(p []byte) (int, error) { return c.r.Read(p[:min(len(p), c.n)]) }

// parseStreamRequest reads body as the Budget does: what it says, and where
// include_usage goes.
func parseStreamRequest(body []byte) (chatRequest, streamOptionsAt, error) {
	var cr chatRequest
	var at streamOptionsAt
	_, err := parseChatRequestFallbacks(body, &cr, &at)
	return cr, at, err
}

// checkStreamUsageEdit checks what withStreamUsage does to body: when it
// edits, encoding/json reads include_usage true in the result (merging or
// not), and every other member as it was.
func checkStreamUsageEdit(t *testing.T, body []byte, cr chatRequest, at streamOptionsAt) {
	t.Helper()
	e, changed := withStreamUsage(body, &cr, &at)
	if !changed {
		if cr.Stream && !cr.IncludeUsage {
			t.Fatalf("withStreamUsage(%q) made no edit", body)
		}
		return
	}
	out := editedBytes(t, body, e)
	if !json.Valid(out) {
		t.Fatalf("withStreamUsage(%q) = %q, not JSON", body, out)
	}
	goR, goOK := goReading(out)
	exR, exOK := exactReading(out)
	if !goOK || !goR.IncludeUsage || !exOK || !exR.IncludeUsage {
		t.Fatalf("withStreamUsage(%q) = %q: encoding/json reads %+v, an exact decoder %+v", body, out, goR, exR)
	}
	var before, after map[string]any
	if json.Unmarshal(body, &before) != nil || json.Unmarshal(out, &after) != nil {
		t.Fatalf("withStreamUsage(%q) = %q", body, out)
	}
	opts, _ := before["stream_options"].(map[string]any)
	if opts == nil {
		opts = map[string]any{}
	}
	opts["include_usage"] = true
	before["stream_options"] = opts
	if !reflect.DeepEqual(before, after) {
		t.Fatalf("withStreamUsage(%q) = %q: members changed", body, out)
	}
	got, err := parseChatRequest(out)
	if err != nil || !got.IncludeUsage || got.Model != cr.Model || got.Stream != cr.Stream || got.MaxOutput != cr.MaxOutput || got.Choices != cr.Choices {
		t.Fatalf("rewrite changed the request: %+v -> %+v, %v (%q)", cr, got, err, out)
	}
}

func TestWithStreamUsageAddsIncludeUsageAndKeepsTheRest(t *testing.T) {
	for _, body := range []string{
		`{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}`,
		` { "stream" : true , "model":"m"}`,
		`{"stream":true}`,
		`{"model":"m","stream":true,"stream_options":null}`,
		`{"model":"m","stream":true,"stream_options":{"include_usage":false,"include_obfuscation":false},"x":[1,{"y":2}]}`,
		`{"model":"m","stream_options":{},"stream":true}`,
		`{"model":"m","stream_options":{ },"stream":true}`,
		`{"model":"m","stream":true,"stream_options":{"include_usage":false},"stream_options":{"include_usage":false}}`,
		`{"model":"m","stream":true,"stream_options":{"include_usage":false,"include_usage":false}}`,
		`{"model":"m","stream":true,"\u0073tream_options":{"include_usage":false}}`,
	} {
		t.Run(body, func(t *testing.T) {
			cr, at, err := parseStreamRequest([]byte(body))
			require.NoError(t, err)
			_, changed := withStreamUsage([]byte(body), &cr, &at)
			require.True(t, changed)
			checkStreamUsageEdit(t, []byte(body), cr, at)
		})
	}
}

func TestWithStreamUsageReplacesAFalseOrNullIncludeUsage(t *testing.T) {
	// Repeating the key would read as true in Go and Python, but strict
	// decoders (Rust's serde) refuse duplicate keys.
	for body, want := range map[string]string{
		`{"model":"m","stream":true,"stream_options":{"include_usage":false}}`:                     `{"model":"m","stream":true,"stream_options":{"include_usage":true}}`,
		`{"model":"m","stream":true,"stream_options":{ "include_usage" : null , "x":1}}`:           `{"model":"m","stream":true,"stream_options":{ "include_usage" : true , "x":1}}`,
		`{"model":"m","stream":true,"stream_options":{"include_usage":false},"stream_options":{}}`: `{"model":"m","stream":true,"stream_options":{"include_usage":false},"stream_options":{"include_usage":true}}`,
	} {
		cr, at, err := parseStreamRequest([]byte(body))
		require.NoError(t, err)
		e, changed := withStreamUsage([]byte(body), &cr, &at)
		require.True(t, changed)
		assert.Equal(t, want, string(editedBytes(t, []byte(body), e)))
	}
}

func TestWithStreamUsageLeavesOtherBodiesAlone(t *testing.T) {
	for _, body := range []string{
		`{"model":"m","messages":[]}`,
		`{"model":"m","stream":false}`,
		`{"model":"m","stream":true,"stream_options":{"include_usage":true}}`,
	} {
		cr, at, err := parseStreamRequest([]byte(body))
		require.NoError(t, err)
		_, changed := withStreamUsage([]byte(body), &cr, &at)
		assert.False(t, changed, body)
	}
}

func TestWithStreamUsageDoesNotCopyTheBody(t *testing.T) {
	body := benchRequest8KiB
	cr, at, err := parseStreamRequest(body)
	require.NoError(t, err)
	e, changed := withStreamUsage(body, &cr, &at)
	require.True(t, changed)
	buf := make([]byte, 4096)
	getBody := func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	r := &http.Request{}
	allocs := testing.AllocsPerRun(100, func() {
		r.GetBody = getBody
		e.apply(r)
		drainBody(r.Body, buf)
	})
	assert.LessOrEqual(t, allocs, 5.0, "no more than the readers and the GetBody closure")
}

func TestEditedBodyRefusesABodyThatChanged(t *testing.T) {
	body := []byte(`{"model":"m","stream":true,"stream_options":null}`)
	cr, at, err := parseStreamRequest(body)
	require.NoError(t, err)
	e, _ := withStreamUsage(body, &cr, &at)
	for _, other := range []string{`{"model":"m","stream":true,"stream_options":{}  }`, `{"model":"m"}`} {
		r := &http.Request{GetBody: func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(other)), nil }}
		e.apply(r)
		_, err := io.ReadAll(r.Body)
		assert.ErrorIs(t, err, errBodyChanged, other)
	}
}

func TestEditedBodyPassesOnGetBodyErrors(t *testing.T) {
	boom := errors.New("boom")
	e := bodyEdit{at: 1, insert: "x", length: 3}
	r := &http.Request{GetBody: func() (io.ReadCloser, error) { return nil, boom }}
	e.apply(r)
	_, err := r.Body.Read(make([]byte, 8))
	assert.ErrorIs(t, err, boom)
	assert.NoError(t, r.Body.Close())
	_, err = r.GetBody()
	assert.ErrorIs(t, err, boom)
}

// usageOnlyStream is openAIStream as a caller who did not ask for usage
// gets it.
var usageOnlyStream = strings.Replace(openAIStream, "data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":19,\"completion_tokens\":2,\"total_tokens\":21,"+
	"\"prompt_tokens_details\":{\"cached_tokens\":0}}}\n\n", "", 1)

func TestUsageChunkStripperHidesOnlyTheUsageChunkWhateverTheReads(t *testing.T) {
	for _, stream := range []struct{ in, want string }{
		{openAIStream, usageOnlyStream},
		{strings.ReplaceAll(openAIStream, "\n", "\r\n"), strings.ReplaceAll(usageOnlyStream, "\n", "\r\n")},
		{strings.Replace(openAIStream, `"usage":{`, `"\u0075sage":{`, 1), usageOnlyStream},
		{anthropicStream, anthropicStream},
	} {
		for _, read := range []int{1, 2, 5, 13, 64, 512, 4096} {
			for _, arrive := range []int{1, 3, 7, 100, 1 << 20} {
				s := newUsageChunkStripper(io.NopCloser(chunked([]byte(stream.in), arrive)))
				got, err := io.ReadAll(chunkedReader{s, read})
				require.NoError(t, err)
				require.Equal(t, stream.want, string(got), "reads of %d, arriving by %d", read, arrive)
			}
		}
	}
}

// Was a bug: a usage-only chunk whose choices are null (Cloudflare Workers
// AI, ModelScope; a Go server's nil slice) or missing (Fireworks) rather
// than [] was handed to a caller that never asked for usage, which
// go-openai decodes as a chunk without choices: the usual resp.Choices[0]
// panics. It is hidden as the [] chunk is.
func TestUsageChunkStripperHidesAUsageChunkWithNullOrNoChoices(t *testing.T) {
	for _, choices := range []string{`"choices":null,`, ``, `"choices":null,"choices":[],`} {
		stream := strings.Replace(openAIStream, `"choices":[],"usage":{`, choices+`"usage":{`, 1)
		require.NotEqual(t, openAIStream, stream)
		for _, read := range []int{1, 7, 512, 4096} {
			got, err := io.ReadAll(chunkedReader{newUsageChunkStripper(io.NopCloser(chunked([]byte(stream), 5))), read})
			require.NoError(t, err)
			assert.Equal(t, usageOnlyStream, string(got), "%s, reads of %d", choices, read)
		}
	}
}

func TestUsageChunkStripperKeepsChunksThatAreNotUsageOnly(t *testing.T) {
	for _, event := range []string{
		"data: {\"choices\":[{\"delta\":{}}],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1}}\n\n", // usage with content
		"data: {\"choices\":[],\"usage\":null}\n\n",
		"data: {\"Choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1}}\n\n",
		"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1}}\ndata: {}\n\n",
		"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1},\n\n", // not JSON
		"data: {\"usage\":null}\n\n",
		"data: {\"choices\":null,\"choices\":[{\"delta\":{\"content\":\"x\"}}],\"usage\":{\"prompt_tokens\":1}}\n\n",
		"data: {\"error\":{\"message\":\"x\"},\"usage\":{\"prompt_tokens\":1}}\n\n",
		"data: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":1}}\n\n", // an event, not a chunk
	} {
		stream := event + "data: [DONE]\n\n"
		got, err := io.ReadAll(newUsageChunkStripper(io.NopCloser(strings.NewReader(stream))))
		require.NoError(t, err)
		assert.Equal(t, stream, string(got))
	}
}

func TestUsageChunkStripperPassesLongEventsAsTheyAre(t *testing.T) {
	long := "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1},\"x\":\"" + strings.Repeat("a", maxHeldEvent) + "\"}\n\n"
	stream := long + openAIStream
	got, err := io.ReadAll(newUsageChunkStripper(io.NopCloser(chunked([]byte(stream), 1000))))
	require.NoError(t, err)
	assert.True(t, string(got) == long+usageOnlyStream, "got %d bytes, want %d", len(got), len(long+usageOnlyStream))
}

func TestUsageChunkStripperSharesTheUsageReadersScan(t *testing.T) {
	var rep usageReport
	resp := &http.Response{Header: http.Header{"Content-Type": {"text/event-stream"}}, Body: io.NopCloser(chunked([]byte(openAIStream), 10))}
	observeUsage(resp, func(u Usage, ok bool) { rep.calls++; rep.u, rep.ok = u, ok })
	observed := resp.Body
	resp.Body = newUsageChunkStripper(resp.Body)
	assert.Same(t, observed, resp.Body, "one reader scans and strips")
	got, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	assert.Equal(t, usageOnlyStream, string(got))
	assert.Equal(t, usageReport{1, Usage{InputTokens: 19, OutputTokens: 2}, true}, rep)
}

// sseEvents splits a stream into its events as the SSE spec frames them:
// lines end at \r\n, \n or \r, and an empty line ends an event.
func sseEvents(stream []byte) [][]byte {
	var events [][]byte
	start, line := 0, 0 // where the event and the line being read start
	for i := 0; i < len(stream); i++ {
		if c := stream[i]; c != '\r' && c != '\n' {
			continue
		}
		blank := i == line
		if stream[i] == '\r' && i+1 < len(stream) && stream[i+1] == '\n' {
			i++
		}
		line = i + 1
		if blank {
			events = append(events, stream[start:line])
			start = line
		}
	}
	if start < len(stream) {
		events = append(events, stream[start:])
	}
	return events
}

func FuzzUsageChunkStripper(f *testing.F) {
	f.Add([]byte(openAIStream), uint8(3))
	f.Add([]byte(strings.ReplaceAll(openAIStream, "\n", "\r\n")), uint8(1))
	f.Add([]byte(strings.ReplaceAll(openAIStream, "\n", "\r")), uint8(4))
	f.Add([]byte(strings.ReplaceAll(openAIStream, "\n\n", "\r\n\r")), uint8(6))
	f.Add([]byte("data: {\"choices\":[],\"usage\":{}}\r\r\ndata: [DONE]\r"), uint8(0))
	f.Add([]byte("data: {\"choices\": [ ],\"usage\":{}}\n\n"), uint8(5))
	f.Add([]byte("data: {\"choices\":[],\"\\u0075sage\":{\"x\":1}}\n\ndata: [DONE]"), uint8(2))
	f.Add([]byte(utf8BOM+"data: {\"choices\":[],\"usage\":{}}\n\ndata: [DONE]"), uint8(0))
	f.Add([]byte(": keep-alive\r:\ndata: {\"choices\":[],\"usage\":{}}\r\n\r\n: x\r\ndata: [DONE]\n\n"), uint8(3))
	f.Add([]byte("event: e\n: keep-alive\ndata: {\"choices\":[],\"usage\":{}}\n\n"), uint8(2))
	f.Fuzz(func(t *testing.T, stream []byte, chunk uint8) {
		whole, err := io.ReadAll(newUsageChunkStripper(io.NopCloser(bytes.NewReader(stream))))
		if err != nil {
			t.Fatal(err)
		}
		size := int(chunk)%13 + 1
		got, err := io.ReadAll(chunkedReader{newUsageChunkStripper(io.NopCloser(chunked(stream, size))), int(chunk)%7 + 1})
		if err != nil || !bytes.Equal(got, whole) {
			t.Fatalf("%q: read whole %q, in pieces of %d %q (%v)", stream, whole, size, got, err)
		}
		// What is gone is whole events, each a JSON data line with usage,
		// but the comment lines that begin them; a byte order mark before
		// them stays (see sseScanner.skipBOM).
		rest, events := got, stream
		if after, ok := bytes.CutPrefix(stream, []byte(utf8BOM)); ok {
			if !bytes.HasPrefix(rest, []byte(utf8BOM)) {
				t.Fatalf("%q: its byte order mark dropped", stream)
			}
			rest, events = rest[len(utf8BOM):], after
		}
		for _, ev := range sseEvents(events) {
			if bytes.HasPrefix(rest, ev) {
				rest = rest[len(ev):]
				continue
			}
			if !hasUsageData(ev) {
				t.Fatalf("%q: event %q dropped", stream, ev)
			}
			comments := leadingComments(ev)
			if !bytes.HasPrefix(rest, comments) {
				t.Fatalf("%q: the comment lines %q that begin event %q dropped", stream, comments, ev)
			}
			rest = rest[len(comments):]
		}
		if len(rest) != 0 {
			t.Fatalf("%q: stripped to %q, not whole events", stream, got)
		}
	})
}

// leadingComments returns the comment lines that begin the event ev, with
// their line ends.
func leadingComments(ev []byte) []byte {
	i := 0
	for i < len(ev) && ev[i] == ':' {
		j := bytes.IndexAny(ev[i:], "\r\n")
		if j < 0 {
			return ev[:i]
		}
		i += j + 1
		if ev[i-1] == '\r' && i < len(ev) && ev[i] == '\n' {
			i++
		}
	}
	return ev[:i]
}

// hasUsageData reports whether the event ev has a data line whose value
// is a JSON object with a usage that is not null, as encoding/json reads
// it.
func hasUsageData(ev []byte) bool {
	for _, line := range bytes.FieldsFunc(ev, func(r rune) bool { return r == '\r' || r == '\n' }) {
		v, ok := bytes.CutPrefix(line, []byte("data:"))
		var chunk struct{ Usage json.RawMessage }
		if ok && json.Unmarshal(v, &chunk) == nil && chunk.Usage != nil && string(chunk.Usage) != "null" {
			return true
		}
	}
	return false
}

func FuzzWithStreamUsage(f *testing.F) {
	for _, s := range []string{
		`{"model":"m","stream":true}`, `{"stream":true,"stream_options":null}`, `{"stream":true,"stream_options":{"a":1}}`,
		`{"stream":true,"stream_options":{"include_usage":false},"stream_options":{}}`, ` {}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		cr, at, err := parseStreamRequest(body)
		if err != nil {
			return
		}
		cr.Stream, cr.IncludeUsage = true, false // edit every body
		checkStreamUsageEditOf(t, body, cr, at)
	})
}

// checkStreamUsageEditOf is checkStreamUsageEdit for a request read as
// streaming whatever its body says.
func checkStreamUsageEditOf(t *testing.T, body []byte, cr chatRequest, at streamOptionsAt) {
	e, changed := withStreamUsage(body, &cr, &at)
	if !changed {
		t.Fatalf("no edit for %q", body)
	}
	out := editedBytes(t, body, e)
	var before, after map[string]json.RawMessage
	if json.Unmarshal(body, &before) != nil || json.Unmarshal(out, &after) != nil {
		t.Fatalf("withStreamUsage(%q) = %q, not a JSON object", body, out)
	}
	goR, goOK := goReading(out)
	exR, exOK := exactReading(out)
	if !exOK || !exR.IncludeUsage || goOK && !goR.IncludeUsage {
		t.Fatalf("withStreamUsage(%q) = %q: include_usage not read as true", body, out)
	}
	delete(before, "stream_options")
	delete(after, "stream_options")
	if fmt.Sprint(before) != fmt.Sprint(after) {
		t.Fatalf("withStreamUsage(%q) = %q: members changed", body, out)
	}
}

func TestEditedBodyIsSentAgainWhenARedirectReplaysIt(t *testing.T) {
	var got []string
	mux := http.NewServeMux()
	mux.HandleFunc("/old", func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		http.Redirect(w, r, "/new", http.StatusTemporaryRedirect) // the client sends the body again, from GetBody
	})
	mux.HandleFunc("/new", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got = append(got, string(b))
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	client := srv.Client()
	defer client.CloseIdleConnections()

	body := `{"model":"m","stream":true,"stream_options":null,"messages":[]}`
	cr, at, err := parseStreamRequest([]byte(body))
	require.NoError(t, err)
	e, changed := withStreamUsage([]byte(body), &cr, &at)
	require.True(t, changed)
	req, err := http.NewRequest("POST", srv.URL+"/old", strings.NewReader(body))
	require.NoError(t, err)
	e.apply(req)
	resp, err := client.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, []string{`{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[]}`}, got)
}
