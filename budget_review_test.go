package httpguard

import (
	"bufio"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// answerLegacyCompletions answers /v1/completions as OpenAI does: each
// prompt of a batch (an array of strings, or of token arrays) gets n
// choices (best_of generated), each up to max_tokens, all billed.
func answerLegacyCompletions(w http.ResponseWriter, _ *http.Request, body []byte) {
	var req struct {
		Prompt    json.RawMessage `json:"prompt"`
		MaxTokens int             `json:"max_tokens"`
		N         int             `json:"n"`
		BestOf    int             `json:"best_of"`
	}
	json.Unmarshal(body, &req)
	prompts := 1
	var batch []json.RawMessage
	if json.Unmarshal(req.Prompt, &batch) == nil && len(batch) > 0 && (batch[0][0] == '"' || batch[0][0] == '[') {
		prompts = len(batch)
	}
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"object":"text_completion","choices":[],"usage":{"prompt_tokens":%d,"completion_tokens":%d}}`,
		len(body), prompts*max(1, req.N, req.BestOf)*req.MaxTokens)
}

// OpenAI's completions endpoint takes a batch of prompts in one request and
// answers (and bills) max_tokens for each of them: the reservation must
// cover every prompt of the batch, or one request bills far past the Limit
// though it set max_tokens.
func TestBudgetReservesEveryPromptOfABatchedCompletion(t *testing.T) {
	for name, prompt := range map[string]string{
		"strings":      `["a","b","c","d","e","f","g","h"]`,
		"token arrays": `[[1],[2],[3],[4],[5],[6],[7],[8]]`,
	} {
		t.Run(name, func(t *testing.T) {
			api := newFakeAPI(t, answerLegacyCompletions)
			body := `{"model":"m","max_tokens":1000,"prompt":` + prompt + `}`
			limit := 2 * reservation(body, 1000) // room for two prompts' worth, not eight
			b := newTestBudget(t, BudgetConfig{Limit: limit, MaxWait: -1})

			resp, err := api.client(t, b).Post(api.srv.URL+"/v1/completions", "application/json", strings.NewReader(body))
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			assert.LessOrEqual(t, b.Spent(), limit, "one request billed past the Limit though it set max_tokens")
			assert.ErrorIs(t, err, ErrBudgetExceeded, "eight prompts of up to 1000 tokens do not fit")
			assert.Zero(t, api.hits.Load())
		})
	}
}

func TestPromptBatchCountsThePromptsOfABatch(t *testing.T) {
	for v, want := range map[string]int64{
		``: 1, `"a"`: 1, `null`: 1, `[]`: 1, `[1, 2, 3]`: 1,
		`["a","b"]`: 2, `[ "a" , "b,]\"" , "c" ]`: 3, `[[1,2],[3],[4, [5]]]`: 3, `["x[", {"a":[1,2]}]`: 2,
	} {
		assert.Equal(t, want, promptBatch([]byte(v)), "%s", v)
	}
}

// countingBodies is a GetBody that counts the readers it opens and those
// closed.
type countingBodies struct {
	body           string
	opened, closed atomic.Int32
}

func (c *countingBodies) getBody() (io.ReadCloser, error) {
	c.opened.Add(1)
	return struct {
		io.Reader
		io.Closer
	}{strings.NewReader(c.body), closerFunc(func() error { c.closed.Add(1); return nil })}, nil
}

type closerFunc func() error

func (f closerFunc) Close() error { return f() }

// net/http requires a request body to allow Close concurrently with Read,
// and HTTP/2 closes it from a goroutine of its own, also before the first
// Read: the body the Budget sends with include_usage added must neither
// race nor open a reader of the original that nobody closes.
func TestEditedBodyAllowsCloseBeforeAndDuringRead(t *testing.T) {
	body := []byte(`{"model":"m","stream":true,"messages":[]}`)
	cr, at, err := parseStreamRequest(body)
	require.NoError(t, err)
	e, ok := withStreamUsage(body, &cr, &at)
	require.True(t, ok)

	bodies := &countingBodies{body: string(body)}
	open := func() io.ReadCloser {
		r := &http.Request{GetBody: bodies.getBody}
		e.apply(r)
		return r.Body
	}
	closeBeforeRead(t, open())
	assert.Equal(t, bodies.opened.Load(), bodies.closed.Load(), "a reader of the original was opened and never closed")

	closeDuringRead(open)
	assert.Equal(t, bodies.opened.Load(), bodies.closed.Load(), "every reader opened was closed")
}

// closeBeforeRead closes body, a request body never read, and checks that
// Read then fails as net/http's bodies do.
func closeBeforeRead(t *testing.T, body io.ReadCloser) {
	t.Helper()
	require.NoError(t, body.Close())
	_, err := body.Read(make([]byte, 64))
	assert.ErrorIs(t, err, http.ErrBodyReadAfterClose)
}

// closeDuringRead closes bodies from open while another goroutine reads
// them, as HTTP/2 does: -race reports what the body does not guard.
func closeDuringRead(open func() io.ReadCloser) {
	for range 100 {
		body := open()
		done := make(chan struct{})
		go func() {
			defer close(done)
			io.Copy(io.Discard, body)
		}()
		body.Close()
		<-done
	}
}

// A caller that sets Accept-Encoding itself reads the stream compressed,
// which no layer can read: the Budget must pass it on as it arrives (and
// charge the reservation), not hold the compressed bytes back while it
// looks for the end of an event, which never shows in them.
func TestBudgetPassesACompressedStreamOnAsItArrives(t *testing.T) {
	release := make(chan struct{})
	api := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Content-Encoding", "gzip")
		zw := gzip.NewWriter(w)
		fmt.Fprint(zw, "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n")
		zw.Flush()
		w.(http.Flusher).Flush()
		select { // the rest comes once the caller has the first event
		case <-release:
		case <-r.Context().Done():
		}
		fmt.Fprint(zw, "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1}}\n\ndata: [DONE]\n\n")
		zw.Close()
	})
	b := newTestBudget(t, BudgetConfig{Limit: Dollar})
	req, err := http.NewRequest("POST", api.srv.URL+"/v1/chat/completions",
		strings.NewReader(`{"model":"m","max_tokens":10,"stream":true,"messages":[]}`))
	require.NoError(t, err)
	req.Header.Set("Accept-Encoding", "gzip")
	resp, err := api.client(t, b).Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()

	first := make(chan string, 1)
	go func() {
		defer close(release)
		zr, err := gzip.NewReader(resp.Body)
		if err != nil {
			first <- err.Error()
			return
		}
		line, _ := bufio.NewReader(zr).ReadString('\n')
		first <- line
	}()
	select {
	case line := <-first:
		assert.Equal(t, "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n", line)
	case <-time.After(2 * time.Second):
		t.Fatal("the first event, sent and flushed, did not reach the caller")
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	assert.Equal(t, reservation(`{"model":"m","max_tokens":10,"stream":true,"messages":[]}`, 10), b.Spent(),
		"a compressed stream is charged its reservation")
}

// An answer read whole, its usage and its end included ([DONE], or the
// JSON object's last brace), is charged its usage even when the connection
// then breaks before the body's formal end (a proxy that drops it without
// the last chunk): the provider billed that usage, and the caller has the
// whole answer, as it would after a Close at that point.
func TestBudgetChargesTheUsageOfAnAnswerWholeBeforeItsConnectionBroke(t *testing.T) {
	for name, answer := range map[string]struct{ contentType, body string }{
		"stream": {"text/event-stream", "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n" +
			"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1}}\n\ndata: [DONE]\n\n"},
		"json": {"application/json", `{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1}}`},
	} {
		t.Run(name, func(t *testing.T) {
			api := newFakeAPI(t, func(w http.ResponseWriter, _ *http.Request, _ []byte) {
				w.Header().Set("Content-Type", answer.contentType)
				io.WriteString(w, answer.body)
				w.(http.Flusher).Flush()
				panic(http.ErrAbortHandler) // no last chunk: the caller's Read fails after the whole answer
			})
			b := newTestBudget(t, BudgetConfig{Limit: Dollar})
			resp, err := api.client(t, b).Post(api.srv.URL+"/v1/chat/completions", "application/json",
				strings.NewReader(`{"model":"m","max_tokens":10,"stream":true,"stream_options":{"include_usage":true}}`))
			require.NoError(t, err)
			got, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			require.Error(t, err, "the connection broke")
			require.Equal(t, answer.body, string(got))
			assert.Equal(t, Money(3*1000+1*2000), b.Spent(), "the usage the provider billed, not the reservation")
		})
	}
}

// Counting tokens and moderation cost nothing: a Budget lets them pass
// unpriced, even when no money remains, where it used to charge each a
// whole reservation (its answer reports no usage).
func TestBudgetLetsFreeEndpointsPassUnpriced(t *testing.T) {
	api := newFakeAPI(t, func(w http.ResponseWriter, _ *http.Request, _ []byte) {
		io.WriteString(w, `{"input_tokens":1234}`)
	})
	var settlements atomic.Int64
	b := newTestBudget(t, BudgetConfig{Limit: Cent, OnSettle: func(Settlement) { settlements.Add(1) }})
	body := `{"model":"m","max_tokens":100000,"messages":[{"role":"user","content":"hi"}]}`
	for _, path := range []string{"/v1/messages/count_tokens", "/v1/responses/input_tokens"} {
		assert.Equal(t, `{"input_tokens":1234}`, readThrough(t, api, b, path, body), path)
	}
	for _, moderation := range []string{`{"input":"hi"}`, `{"model":"omni-moderation-latest","input":"hi"}`, `{"model":"text-moderation-stable","input":["hi"]}`} {
		assert.Equal(t, `{"input_tokens":1234}`, readThrough(t, api, b, "/v1/moderations", moderation), moderation)
	}
	assert.Zero(t, settlements.Load())
	assert.Zero(t, b.Spent())

	_, err := api.client(t, b).Post(api.srv.URL+"/v1/messages%2Fcount_tokens", "application/json", strings.NewReader(body))
	require.ErrorIs(t, err, ErrBudgetExceeded, "an escaped slash is not a free endpoint's")
	assert.False(t, FreeEndpoint(&http.Request{}))
}

// FreeEndpoint reads Path where there is no RawPath: it must judge every
// path as it judges the path's escaped form, which the server receives.
func TestFreeEndpointReadsPathAsItsEscapedForm(t *testing.T) {
	parts := []string{"/", "v1", "messages", "count_tokens", "responses", "input_tokens", "moderations",
		"%", "%2F", "?", "#", ";", " ", "é", "_", "A", "..", "\x00"}
	rng := rand.New(rand.NewPCG(7, 7))
	for range 20000 {
		var b strings.Builder
		for range rng.IntN(6) {
			b.WriteString(parts[rng.IntN(len(parts))])
		}
		u := &url.URL{Path: b.String()}
		want := FreeEndpoint(&http.Request{URL: &url.URL{Path: u.Path, RawPath: u.EscapedPath()}})
		require.Equal(t, want, FreeEndpoint(&http.Request{URL: u}), "path %q, escaped %q", u.Path, u.EscapedPath())
	}
}

// readPathWord finds the words of a path as strings.EqualFold does,
// whatever the segment's first byte.
func TestReadPathWordAgreesWithEqualFold(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 9))
	parts := []string{"r", "R", "e", "E", "a", "l", "t", "i", "m", "v", "d", "o", "s", "S", "ſ", "K", "k", "n", "g", "p", "y",
		"realtime", "videos", "video", "openai", "deployments", "engines", "é", "\xff", "2", "_", "`", "@"}
	segs := joinRandomly(rng, parts, 20000, 5)
	for _, word := range pathWords {
		require.GreaterOrEqual(t, len(word), minPathWord, word)
		segs = append(segs, word, strings.ToUpper(word), strings.ReplaceAll(word, "s", "ſ"), strings.ToUpper(word[:1])+word[1:])
	}
	for _, s := range segs {
		want := noPathWord
		for w, word := range pathWords {
			if strings.EqualFold(s, word) {
				want = pathWord(w)
			}
		}
		require.Equal(t, want, readPathWord(s), "%q", s)
	}
}

// isWordFold reads a path segment as strings.EqualFold does: a segment of
// another length than the word can match only through a rune above 0x7f
// that folds to an ASCII letter (ſ is s, K is k).
func TestIsWordFoldAgreesWithEqualFold(t *testing.T) {
	for _, word := range []string{"realtime", "videos", "openai", "deployments", "engines", "kelvins", "sessions"} {
		up := strings.ToUpper(word)
		segs := []string{word, up, word[:len(word)-1], word + "s", "x" + word[1:], "", "completions", "chat", "v1",
			strings.ReplaceAll(word, "s", "ſ"), strings.ReplaceAll(up, "S", "ſ"), strings.ReplaceAll(word, "k", "\u212a"),
			word + "é", "é" + word, strings.Repeat(word, 3), "\xff" + word[1:], string(word[0]^0x20) + word[1:],
			string(word[0]|0x80) + word[1:], string(word[0]-0x20) + word[1:], string(word[0]&^0x40) + word[1:]}
		for _, s := range segs {
			require.Equal(t, strings.EqualFold(s, word), isWordFold(s, word), "%q vs %q", s, word)
		}
	}
	f := readPathForm("/openai/deploymentſ/gpt-4o/chat/completions", true)
	assert.Equal(t, "gpt-4o", f.deployment)
	f = readPathForm("/OPENAI/Deployments/gpt-4o/chat/completions", true)
	assert.Equal(t, "gpt-4o", f.deployment)
	f = readPathForm("/\u212aengines/gpt-4o/chat/completions", true)
	assert.Equal(t, "", f.deployment)
	f = readPathForm("/ENGINES/gpt-4o/chat/completions", true)
	assert.Equal(t, "gpt-4o", f.deployment)
	assert.True(t, readPathForm("/v1/VIDEOſ", false).videos)
	assert.True(t, readPathForm("/v1/Video/generations", false).videos)
	assert.False(t, readPathForm("/v1/vide/generations", false).videos)
	assert.True(t, readPathForm("/v1/RealTime/sessions", false).realtime)
	assert.Equal(t, pathFacts{}, readPathForm("/v1/chat/completions", true))
}

// readPathForm's scan of a plain path reads what reading it a segment at
// a time reads, over generated paths and the fuzz seeds.
func TestReadPathFormReadsWhatItsSegmentsRead(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	parts := []string{"/", "/", "/", "v1", "chat", "completions", "realtime", "videos", "video", "openai", "deployments", "engines",
		"REALTIME", "Videos", "OpenAI", "videoſ", "\u212aengines", "é", "\xff", "x", "rrrrrr", "vvvvvv", "eeeeee", "dddddd", "oooooo", "Ooooooo"}
	paths := append(joinRandomly(rng, parts, 20000, 8), pathSeeds...)
	plain := 0
	for _, p := range paths {
		plain += int(b2u(checkReadPathForm(t, p)))
	}
	assert.Greater(t, plain, len(paths)/10, "the generator should make plain paths")
	assert.Less(t, plain, len(paths)*9/10, "the generator should make paths with words")
}

// joinRandomly returns n strings, each of up to most of parts, drawn at
// random.
func joinRandomly(rng *rand.Rand, parts []string, n, most int) []string {
	out := make([]string, n)
	for i := range out {
		var b strings.Builder
		for range rng.IntN(most + 1) {
			b.WriteString(parts[rng.IntN(len(parts))])
		}
		out[i] = b.String()
	}
	return out
}

var pathSeeds = []string{"", "/", "//", "/v1/chat/completions", "/openai/deployments/gpt-4o/chat/completions",
	"/engines/x/completions", "/v1/realtime", "/v1/videos/", "realtime", "/v1/VIDEOſ", "/\u212aengines/x", "/\xffideos",
	"/v1/Rrrrrr/chat", "/openai/deployments", "/openai/deployments/", "/engines//chat/completions"}

// checkReadPathForm checks that readPathForm reads p, in both forms, as
// readSegments does; it reports whether p was plain.
func checkReadPathForm(t *testing.T, p string) bool {
	for _, sent := range []bool{true, false} {
		require.Equal(t, readSegments(p, sent), readPathForm(p, sent), "%q sent %v", p, sent)
	}
	return plainPath(p)
}

// The path facts cache (firstSlots, as sentPaths) gives what reading the path gives, for paths seen
// before and not, over generated paths read in random order, and
// allocates nothing once its slots are filled.
func TestSentPathCacheReadsThePath(t *testing.T) {
	rng := rand.New(rand.NewPCG(8, 13))
	parts := []string{"/", "/", "v1", "chat", "completions", "openai", "deployments", "gpt-4o", "engines", "realtime", "videos", "video",
		"Videos", "x", "é", "ab", "c"}
	paths := joinRandomly(rng, parts, 200, 7)
	var c firstSlots[string, pathFacts]
	for range 5000 {
		p := paths[rng.IntN(len(paths))]
		var own pathFacts
		require.Equal(t, readSent(p), *c.get(p, p, readSent, &own), "%q", p)
	}
	for i := range c {
		require.NotNil(t, c[i].Load(), "slot %d", i)
	}
	assert.Zero(t, testing.AllocsPerRun(100, func() {
		p := paths[rng.IntN(len(paths))]
		var own pathFacts
		c.get(p, p, readSent, &own)
	}))
}

// readPath names the endpoint as freeEndpoint does, in the path sent
// (escaped, or Opaque), and says when it is speech, as lenient servers
// route the path (see servedAs), whether or not it read the path before.
func TestReadPathNamesTheEndpointAsFreeEndpoint(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 14))
	parts := []string{"/", "v1", "moderations", "count_tokens", "responses/input_tokens", "audio/speech", "messages",
		"%2F", "%2f", "x", "speech", "audio"}
	for _, p := range joinRandomly(rng, parts, 3000, 4) {
		for _, raw := range []string{"http://api.test" + p, "http://api.test/" + p, "http:" + p} {
			u, err := url.Parse(raw)
			if err != nil {
				continue
			}
			req := &http.Request{URL: u}
			for range 2 { // read, then read again
				var own pathFacts
				f := readPath(u, &own)
				free, moderation := freeEndpoint(req)
				require.Equal(t, free, f.free, "%q", raw)
				require.Equal(t, moderation, f.moderation, "%q", raw)
				require.Equal(t, speechPath(servedAs(sentPath(u))), f.speech, "%q", raw)
			}
		}
	}
}

func FuzzReadPathForm(f *testing.F) {
	for _, p := range pathSeeds {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, p string) { checkReadPathForm(t, p) })
}
