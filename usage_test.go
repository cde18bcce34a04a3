package httpguard

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Sample answers, as providers send them.
const (
	openAIJSON = `{"id":"chatcmpl-1","object":"chat.completion","model":"gpt-4.1","choices":[{"index":0,` +
		`"message":{"role":"assistant","content":"Hello! \"usage\": {\"prompt_tokens\": 999}"},"finish_reason":"stop"}],` +
		`"usage":{"prompt_tokens":19,"completion_tokens":10,"total_tokens":29,` +
		`"prompt_tokens_details":{"cached_tokens":3,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":4}}}`
	anthropicJSON = `{"id":"msg_1","type":"message","role":"assistant","content":[{"type":"text","text":"Hi"}],` +
		`"model":"claude-sonnet-4-5","stop_reason":"end_turn","usage":{"input_tokens":12,"cache_creation_input_tokens":5,` +
		`"cache_read_input_tokens":100,"output_tokens":7}}`
	openAIStream = "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}],\"usage\":null}\n\n" +
		": keep-alive\n\n" +
		"data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}],\"usage\":null}\n\n" +
		"data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n" +
		"data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":19,\"completion_tokens\":2,\"total_tokens\":21," +
		"\"prompt_tokens_details\":{\"cached_tokens\":0}}}\n\n" +
		"data: [DONE]\n\n"
	// responsesStream is an OpenAI Responses stream: its usage is in the
	// response object of response.completed, which ends it.
	responsesStream = "event: response.created\n" +
		"data: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"resp_1\",\"object\":\"response\",\"status\":\"in_progress\",\"output\":[],\"usage\":null}}\n\n" +
		"event: response.output_text.delta\n" +
		"data: {\"type\":\"response.output_text.delta\",\"sequence_number\":1,\"item_id\":\"msg_1\",\"output_index\":0,\"content_index\":0,\"delta\":\"Hello\"}\n\n" +
		"event: response.output_text.delta\n" +
		"data: {\"type\":\"response.output_text.delta\",\"sequence_number\":2,\"item_id\":\"msg_1\",\"output_index\":0,\"content_index\":0,\"delta\":\" there\"}\n\n" +
		"event: response.completed\n" +
		"data: {\"type\":\"response.completed\",\"sequence_number\":3,\"response\":{\"id\":\"resp_1\",\"object\":\"response\",\"status\":\"completed\"," +
		"\"output\":[{\"type\":\"message\",\"content\":[{\"type\":\"output_text\",\"text\":\"Hello there\"}]}]," +
		"\"usage\":{\"input_tokens\":40,\"input_tokens_details\":{\"cached_tokens\":16},\"output_tokens\":2,\"output_tokens_details\":{\"reasoning_tokens\":0},\"total_tokens\":42}}}\n\n"
	anthropicStream = "event: message_start\n" +
		"data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[]," +
		"\"model\":\"claude-sonnet-4-5\",\"usage\":{\"input_tokens\":25,\"cache_read_input_tokens\":10,\"output_tokens\":1}}}\n\n" +
		"event: ping\ndata: {\"type\": \"ping\"}\n\n" +
		"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n" +
		"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello\"}}\n\n" +
		"event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n" +
		"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":null},\"usage\":{\"output_tokens\":8}}\n\n" +
		"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":15}}\n\n" +
		"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"
)

type usageReport struct {
	calls int
	u     Usage // without the model that served it (see servedBy)
	ok    bool
}

// observe runs body through observeUsage as the caller would, reading it
// all and closing, and returns what the caller read and what was reported.
func observe(t *testing.T, contentType string, body io.Reader) (string, usageReport) {
	t.Helper()
	var rep usageReport
	resp := &http.Response{Header: http.Header{"Content-Type": {contentType}}, Body: io.NopCloser(body)}
	observeUsage(resp, func(u Usage, ok bool) { rep.calls++; rep.u, rep.ok = u, ok; rep.u.servedBy = 0 })
	got, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, 1, rep.calls, "report must be called exactly once")
	return string(got), rep
}

// splitReader returns its data in reads of the given sizes, then the rest.
type splitReader struct {
	data  []byte
	sizes []int
}

func (r *splitReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	n := len(r.data)
	if len(r.sizes) > 0 {
		n, r.sizes = min(r.sizes[0], n), r.sizes[1:]
	}
	n = copy(p, r.data[:n])
	r.data = r.data[n:]
	return n, nil
}

// chunked returns a reader of data in reads of size bytes each.
func chunked(data []byte, size int) *splitReader {
	sizes := make([]int, len(data))
	for i := range sizes {
		sizes[i] = size
	}
	return &splitReader{data: data, sizes: sizes}
}

func iotestOneByte(s string) io.Reader { return chunked([]byte(s), 1) }

func TestUsageReadsEveryProviderFormat(t *testing.T) {
	tests := []struct {
		name, usage string
		want        Usage
		ok          bool
	}{
		{"openai", `{"prompt_tokens":19,"completion_tokens":10,"total_tokens":29,"prompt_tokens_details":{"cached_tokens":3}}`,
			Usage{InputTokens: 19, CachedInputTokens: 3, OutputTokens: 10}, true},
		{"anthropic adds cache reads and writes to input", `{"input_tokens":12,"cache_creation_input_tokens":5,"cache_read_input_tokens":100,"output_tokens":7}`,
			Usage{InputTokens: 117, CachedInputTokens: 100, CacheWriteInputTokens: 5, OutputTokens: 7}, true},
		{"deepseek cache hits", `{"prompt_tokens":100,"completion_tokens":5,"prompt_cache_hit_tokens":60,"prompt_cache_miss_tokens":40}`,
			Usage{InputTokens: 100, CachedInputTokens: 60, OutputTokens: 5}, true},
		// Both readings at once, whichever of input and cached input
		// the table prices higher: 50 uncached tokens, 60 cached.
		{"deepseek and openai cached: each reading covered", `{"prompt_tokens":100,"completion_tokens":5,"prompt_cache_hit_tokens":60,"prompt_tokens_details":{"cached_tokens":50}}`,
			Usage{InputTokens: 110, CachedInputTokens: 60, OutputTokens: 5, mixed: true}, true},
		{"responses input includes cached", `{"input_tokens":50,"input_tokens_details":{"cached_tokens":20},"output_tokens":9,"total_tokens":59}`,
			Usage{InputTokens: 50, CachedInputTokens: 20, OutputTokens: 9}, true},
		{"escaped keys", `{"\u0070rompt_tokens":1,"completion\u005ftokens":2}`, Usage{InputTokens: 1, OutputTokens: 2}, true},
		{"duplicate keys: the last wins", `{"prompt_tokens":9,"completion_tokens":2,"prompt_tokens":1}`, Usage{InputTokens: 1, OutputTokens: 2}, true},
		{"empty", `{}`, Usage{}, false},
		{"null", `null`, Usage{}, false},
		{"negative", `{"prompt_tokens":-1,"completion_tokens":5}`, Usage{}, false},
		{"absurd", `{"prompt_tokens":1,"completion_tokens":1000000001}`, Usage{}, false},
		{"cached above input", `{"prompt_tokens":10,"completion_tokens":1,"prompt_tokens_details":{"cached_tokens":11}}`, Usage{}, false},
		{"fractional", `{"prompt_tokens":1.5,"completion_tokens":1}`, Usage{}, false},
		{"exponent", `{"prompt_tokens":1e3,"completion_tokens":1}`, Usage{}, false},
		{"string count", `{"prompt_tokens":"10","completion_tokens":1}`, Usage{}, false},
		{"details not an object", `{"prompt_tokens":10,"completion_tokens":1,"prompt_tokens_details":3}`, Usage{}, false},
		{"a key in another case", `{"prompt_tokens":10,"completion_tokens":1,"Prompt_Tokens":1}`, Usage{}, false},
		{"a details key in another case", `{"prompt_tokens":10,"completion_tokens":1,"prompt_tokens_details":{"CACHED_TOKENS":9}}`, Usage{}, false},
		{"null after a count", `{"prompt_tokens":10,"completion_tokens":1,"prompt_tokens":null}`, Usage{}, false},
		{"a repeated details object that drops a count", `{"prompt_tokens":10,"completion_tokens":1,"prompt_tokens_details":{"cached_tokens":9},"prompt_tokens_details":{}}`, Usage{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r usageReadings
			r.add([]byte(tt.usage))
			w, ok := r.get()
			u, uok := w.usage()
			assert.Equal(t, tt.ok, ok && uok)
			if ok && uok {
				assert.Equal(t, tt.want, u)
			}
		})
	}
}

// refCount is a usage count as encoding/json reads it into an integer
// field: null changes nothing.
type refCount struct {
	v   int64
	set bool
}

func (c *refCount) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		return nil
	}
	if err := json.Unmarshal(b, &c.v); err != nil {
		return err
	}
	c.set = true
	return nil
}

// refGeo reads an inference_geo as the package does (see readGeo):
// "global", "us", or any other value, a region not known.
type refGeo refCount

func (g *refGeo) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		return nil
	}
	var s string
	g.v, g.set = int64(geoOther), true
	if json.Unmarshal(b, &s) == nil && s == "global" {
		g.v = int64(geoGlobal)
	} else if s == "us" {
		g.v = int64(geoUS)
	}
	return nil
}

// refCost reads a usage's cost as the package does (see readCost): a
// number that is not negative, in micro-dollars rounded up; anything else
// is not read, and null changes nothing.
type refCost refCount

func (c *refCost) UnmarshalJSON(b []byte) error {
	var x json.Number
	if string(b) == "null" || json.Unmarshal(b, &x) != nil || len(b) == 0 || b[0] < '0' || b[0] > '9' {
		return nil
	}
	c.set = true
	if m, err := ParseMoney(string(x)); err == nil {
		c.v = min((int64(m)+999)/1000, maxUsageTokens+1)
		return nil
	}
	f, _ := x.Float64()
	c.v = int64(math.Ceil(min(f*1e6, maxUsageTokens+1)))
	return nil
}

type refDetails struct {
	CachedTokens     refCount `json:"cached_tokens"`
	CacheWriteTokens refCount `json:"cache_write_tokens"`
	ImageTokens      refCount `json:"image_tokens"`
}

type refPromptDetails struct {
	CachedTokens             refCount `json:"cached_tokens"`
	AudioTokens              refCount `json:"audio_tokens"`
	ImageTokens              refCount `json:"image_tokens"`
	CacheWriteTokens         refCount `json:"cache_write_tokens"`
	CacheCreationTokens      refCount `json:"cache_creation_tokens"`
	CacheCreationTokenDetail struct {
		Ephemeral5mInputTokens refCount `json:"ephemeral_5m_input_tokens"`
		Ephemeral1hInputTokens refCount `json:"ephemeral_1h_input_tokens"`
	} `json:"cache_creation_token_details"`
}

type refCompletionDetails struct {
	AudioTokens     refCount `json:"audio_tokens"`
	ImageTokens     refCount `json:"image_tokens"`
	ReasoningTokens refCount `json:"reasoning_tokens"`
}

type refOutputDetails struct {
	ImageTokens refCount `json:"image_tokens"`
}

// refUsage is a usage object as a Go SDK declares it, for encoding/json.
type refUsage struct {
	PromptTokens             refCount             `json:"prompt_tokens"`
	CompletionTokens         refCount             `json:"completion_tokens"`
	PromptTokensDetails      refPromptDetails     `json:"prompt_tokens_details"`
	CompletionTokensDetails  refCompletionDetails `json:"completion_tokens_details"`
	PromptCacheHitTokens     refCount             `json:"prompt_cache_hit_tokens"`
	PromptCacheMissTokens    refCount             `json:"prompt_cache_miss_tokens"`
	InputTokens              refCount             `json:"input_tokens"`
	InputTokensDetails       refDetails           `json:"input_tokens_details"`
	OutputTokens             refCount             `json:"output_tokens"`
	OutputTokensDetails      refOutputDetails     `json:"output_tokens_details"`
	CacheReadInputTokens     refCount             `json:"cache_read_input_tokens"`
	CacheCreationInputTokens refCount             `json:"cache_creation_input_tokens"`
	CacheCreation            struct {
		Ephemeral5mInputTokens refCount `json:"ephemeral_5m_input_tokens"`
		Ephemeral1hInputTokens refCount `json:"ephemeral_1h_input_tokens"`
	} `json:"cache_creation"`
	TotalTokens   refCount `json:"total_tokens"`
	ServerToolUse struct {
		WebSearchRequests refCount `json:"web_search_requests"`
		WebFetchRequests  refCount `json:"web_fetch_requests"`
	} `json:"server_tool_use"`
	InferenceGeo    refGeo        `json:"inference_geo"`
	Cost            refCost       `json:"cost"`
	ReasoningTokens refCount      `json:"reasoning_tokens"`
	CitationTokens  refCount      `json:"citation_tokens"`
	SearchQueries   refCount      `json:"num_search_queries"`
	Iterations      refIterations `json:"iterations"`
}

// refIterations is usage.iterations as the package reads it where
// encoding/json would: an array replaces what was read, and null changes
// nothing (encoding/json would empty a slice; keeping the sums is the
// dearer reading). The sums are readIterations', which its own tests
// check.
type refIterations struct {
	sums [4]int64
	set  bool
}

func (r *refIterations) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		return nil
	}
	sums, loose, err := readIterations(b)
	switch {
	case err != nil:
		return err
	case loose: // as encoding/json refuses a fraction for an integer
		return errMalformedUsage
	}
	r.sums, r.set = sums, true
	return nil
}

func (r *refUsage) wire() wireUsage {
	var w wireUsage
	for f, c := range map[usageField]refCount{
		promptTokens: r.PromptTokens, completionTokens: r.CompletionTokens, promptCachedTokens: r.PromptTokensDetails.CachedTokens,
		promptCacheHitTokens: r.PromptCacheHitTokens, promptCacheMissTokens: r.PromptCacheMissTokens, inputTokens: r.InputTokens, inputCachedTokens: r.InputTokensDetails.CachedTokens,
		outputTokens: r.OutputTokens, cacheReadInputTokens: r.CacheReadInputTokens, cacheCreationInputTokens: r.CacheCreationInputTokens,
		cacheCreation1hTokens: r.CacheCreation.Ephemeral1hInputTokens, cacheCreation5mTokens: r.CacheCreation.Ephemeral5mInputTokens,
		totalTokens:       r.TotalTokens,
		promptAudioTokens: r.PromptTokensDetails.AudioTokens, completionAudioTokens: r.CompletionTokensDetails.AudioTokens,
		webSearchRequests: r.ServerToolUse.WebSearchRequests, webFetchRequests: r.ServerToolUse.WebFetchRequests,
		promptCacheWriteTokens: r.PromptTokensDetails.CacheWriteTokens, promptCacheCreationTokens: r.PromptTokensDetails.CacheCreationTokens,
		promptCacheCreation1hTokens: r.PromptTokensDetails.CacheCreationTokenDetail.Ephemeral1hInputTokens,
		promptCacheCreation5mTokens: r.PromptTokensDetails.CacheCreationTokenDetail.Ephemeral5mInputTokens,
		inputCacheWriteTokens:       r.InputTokensDetails.CacheWriteTokens,
		usageGeo:                    refCount(r.InferenceGeo),
		usageCost:                   refCount(r.Cost),
		reasoningTokens:             r.ReasoningTokens, citationTokens: r.CitationTokens,
		promptImageTokens: r.PromptTokensDetails.ImageTokens, completionImageTokens: r.CompletionTokensDetails.ImageTokens,
		inputImageTokens: r.InputTokensDetails.ImageTokens, outputImageTokens: r.OutputTokensDetails.ImageTokens,
		searchQueries: r.SearchQueries, completionReasoningTokens: r.CompletionTokensDetails.ReasoningTokens,
	} {
		if c.set {
			w.put(f, c.v)
		}
	}
	if r.Iterations.set {
		for i, n := range r.Iterations.sums {
			w.put(iterInputTokens+usageField(i), n)
		}
	}
	return w
}

// goUsageReading reads a usage value as encoding/json does.
func goUsageReading(v []byte) (wireUsage, bool) {
	var r refUsage
	if err := json.Unmarshal(v, &r); err != nil || !bytes.HasPrefix(bytes.TrimLeft(v, " \t\r\n"), []byte("{")) && !isJSONNull(bytes.TrimSpace(v)) {
		return wireUsage{}, false
	}
	return r.wire(), true
}

// exactUsageReading reads a usage value as a decoder that matches keys
// exactly and lets the last value (null included) replace the others.
func exactUsageReading(v []byte) (wireUsage, bool) {
	var w wireUsage
	var m map[string]json.RawMessage
	if err := json.Unmarshal(v, &m); err != nil {
		return w, false
	}
	for f, uf := range usageFields {
		if uf.key == "" { // a sum of iterations, read with them
			continue
		}
		d := m
		if uf.parent != "" {
			for _, key := range strings.Split(uf.parent, "/") {
				var inner map[string]json.RawMessage
				if p, ok := d[key]; ok && json.Unmarshal(p, &inner) != nil {
					return w, false
				}
				d = inner
			}
		}
		raw := d[uf.key]
		if raw == nil || string(raw) == "null" {
			continue
		}
		var n int64
		if usageField(f) == usageIterations {
			sums, loose, err := readIterations(raw)
			if err != nil || loose { // a fraction, which integer decoders refuse
				return w, false
			}
			for i, n := range sums {
				w.put(iterInputTokens+usageField(i), n)
			}
			continue
		}
		if usageField(f) == usageCost {
			var c refCost
			if _ = c.UnmarshalJSON(raw); !c.set {
				continue // not read, as the package does not
			}
			n = c.v
		} else if usageField(f) == usageGeo {
			var g refGeo
			_ = g.UnmarshalJSON(raw)
			n = g.v
		} else if json.Unmarshal(raw, &n) != nil {
			return w, false
		}
		w.put(usageField(f), n)
	}
	return w, true
}

// hasFoldedKey reports whether a JSON text has a string, key or value at
// any depth, that differs from one of names in case only.
func hasFoldedKey(v []byte, names ...string) bool {
	dec := json.NewDecoder(bytes.NewReader(v))
	dec.UseNumber()
	for {
		tok, err := dec.Token()
		if err != nil {
			return false
		}
		s, ok := tok.(string)
		if !ok {
			continue
		}
		for _, name := range names {
			if s != name && strings.EqualFold(s, name) {
				return true
			}
		}
	}
}

var usageNames = func() []string {
	var names []string
	for _, uf := range usageFields {
		if uf.key == "" {
			continue
		}
		names = append(names, uf.key)
		for _, parent := range strings.Split(uf.parent, "/") {
			if parent != "" && !slices.Contains(names, parent) {
				names = append(names, parent)
			}
		}
	}
	return names
}()

// providerUsage writes the object of counts at path (as usageKeyOrders)
// with its keys in an order a provider writes them, which readObject
// predicts: counts mostly plain, sometimes not (null, a fraction, a sign,
// leading zeros, too many digits, space), some keys left out.
func (g *jsonGen) providerUsage(b *bytes.Buffer, path string) {
	orders := usageKeyOrders[path]
	b.WriteByte('{')
	n := 0
	for _, name := range orders[g.r.IntN(len(orders))] {
		if g.r.IntN(6) == 0 {
			continue
		}
		if n++; n > 1 {
			b.WriteByte(',')
		}
		if g.r.IntN(10) == 0 {
			g.space(b)
		}
		b.WriteString(`"` + name + `":`)
		sub := strings.TrimPrefix(path+"/"+name, "/")
		switch _, nested := usageKeyOrders[sub]; {
		case nested && g.r.IntN(4) != 0:
			g.providerUsage(b, sub)
		case g.r.IntN(8) == 0:
			b.WriteString([]string{"null", "1.5", "-1", "007", "0", "1e3", `"3"`, " 4", "5 ", "1234567890123456789",
				"999999999999999999", "1000000001", "[]", `"us"`}[g.r.IntN(14)])
		default:
			fmt.Fprint(b, g.r.IntN(5000))
		}
	}
	b.WriteByte('}')
}

// usageObject writes a random usage object: counts in every form, details,
// repeated, null and misspelled keys.
func (g *jsonGen) usageObject(b *bytes.Buffer) {
	if g.r.IntN(10) == 0 {
		b.WriteString("null")
		return
	}
	keys := g.keys
	g.keys = usageNames
	defer func() { g.keys = keys }()
	b.WriteByte('{')
	for i := range g.r.IntN(6) {
		if i > 0 {
			b.WriteByte(',')
		}
		g.space(b)
		g.key(b)
		b.WriteByte(':')
		switch g.r.IntN(8) {
		case 0:
			b.WriteString(`{"cached_tokens":`)
			fmt.Fprint(b, g.r.IntN(50))
			if g.r.IntN(2) == 0 {
				b.WriteString(`,"audio_tokens":`)
				fmt.Fprint(b, g.r.IntN(50))
			}
			if g.r.IntN(3) == 0 {
				b.WriteString(`,"image_tokens":`)
				fmt.Fprint(b, g.r.IntN(50))
			}
			b.WriteString(`}`)
		case 1:
			g.value(b, 1)
		case 2:
			b.WriteString("null")
		default:
			fmt.Fprint(b, g.r.IntN(100)-3)
		}
	}
	b.WriteByte('}')
}

func TestUsageDecodingAgreesWithEncodingJSON(t *testing.T) {
	g := newJSONGen(6)
	for range 5000 {
		var b bytes.Buffer
		g.usageObject(&b)
		v := b.Bytes()
		require.True(t, json.Valid(v), "add reads valid JSON only: %s", v)
		var r usageReadings
		r.add(v)
		w, ok := r.get()
		gw, gok := goUsageReading(v)
		xw, xok := exactUsageReading(v)
		if ok {
			require.True(t, gok && xok, "%s", v)
			require.Equal(t, gw, *w, "encoding/json reads %s differently", v)
			require.Equal(t, xw, *w, "an exact decoder reads %s differently", v)
			continue
		}
		if gok && xok && gw == xw && !hasFoldedKey(v, usageNames...) {
			t.Fatalf("%s: encoding/json and an exact decoder both read %+v, usageReadings refused it", v, gw)
		}
	}
}

func TestObserveUsageReportsOKWhenCloseFollowsACompleteJSONValue(t *testing.T) {
	var rep usageReport
	resp := &http.Response{Header: http.Header{"Content-Type": {"application/json"}}, Body: io.NopCloser(strings.NewReader(openAIJSON + "\n"))}
	observeUsage(resp, func(u Usage, ok bool) { rep.calls++; rep.u, rep.ok = u, ok })
	buf := make([]byte, len(openAIJSON)) // json.Decoder-like: stops after the value, before EOF
	_, err := io.ReadFull(resp.Body, buf)
	require.NoError(t, err)
	require.Equal(t, 0, rep.calls)
	require.NoError(t, resp.Body.Close())
	assert.Equal(t, usageReport{1, Usage{InputTokens: 19, CachedInputTokens: 3, OutputTokens: 10, servedBy: hashModel("gpt-4.1")}, true}, rep)
}

func TestObserveUsageReportsNotOKWhenClosedMidStream(t *testing.T) {
	var rep usageReport
	resp := &http.Response{Header: http.Header{"Content-Type": {"text/event-stream"}}, Body: io.NopCloser(strings.NewReader(openAIStream))}
	observeUsage(resp, func(u Usage, ok bool) { rep.calls++; rep.ok = ok })
	_, err := resp.Body.Read(make([]byte, 100))
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	require.NoError(t, resp.Body.Close())
	_, _ = resp.Body.Read(make([]byte, 100))
	assert.Equal(t, usageReport{calls: 1}, rep)
}

// Scanners of JSON answers are reused once their answer is reported
// (jsonScanners): answers read at once, half-read, closed, or read again
// after their end, or read in small pieces, must each report their own
// usage, once.
func TestObserveUsageGivesEachJSONAnswerItsOwnScanner(t *testing.T) {
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				n := int64(g*1000 + i + 1)
				body := fmt.Sprintf(`{"id":"x","choices":[{"index":0}],"usage":{"prompt_tokens":%d,"completion_tokens":%d}}`, n, n+1)
				var rep usageReport
				resp := &http.Response{Header: http.Header{"Content-Type": {"application/json"}}, Body: io.NopCloser(strings.NewReader(body))}
				observeUsage(resp, func(u Usage, ok bool) { rep.calls++; rep.u, rep.ok = u, ok })
				switch i % 3 {
				case 0: // whole, then read again after the end
					_, _ = io.ReadAll(resp.Body)
					_, _ = resp.Body.Read(make([]byte, 8))
				case 1: // half, then closed: not ok, but what was read stays its own
					_, _ = resp.Body.Read(make([]byte, len(body)/2))
				case 2: // a few bytes at a time
					_, _ = io.CopyBuffer(io.Discard, struct{ io.Reader }{resp.Body}, make([]byte, 7))
				}
				_ = resp.Body.Close()
				_ = resp.Body.Close()
				if i%3 == 1 {
					assert.Equal(t, usageReport{calls: 1, u: rep.u}, rep)
					assert.NotEqual(t, n, rep.u.InputTokens)
					continue
				}
				assert.Equal(t, usageReport{1, Usage{InputTokens: n, OutputTokens: n + 1}, true}, rep, body)
			}
		}()
	}
	wg.Wait()
}

// The usage a reporter is lent is the pooled scanner's own: an answer read
// after one that reported a usage must report what a fresh scanner reads
// of it, nothing of the answer before.
func TestObserveUsageLendsEachAnswerAFreshUsage(t *testing.T) {
	bodies := []string{
		`{"usage":{"prompt_tokens":7,"completion_tokens":9,"prompt_tokens_details":{"cached_tokens":3}},"service_tier":"priority","model":"gpt-4o"}`,
		`{"id":"no usage"}`,
		`{"usage":{"prompt_tokens":7,"completion_tokens":9}}`,
		`{"usage":{"prompt_tokens":-1,"completion_tokens":2}}`, // refused, u left as it was given
		`{"usage":{"input_tokens":5,"output_tokens":6,"cache_read_input_tokens":2}}`,
		`{"usage":{"prompt_tokens":1`,
		`{"usage":null}`,
	}
	for range 3 {
		for _, body := range bodies {
			var fresh jsonUsageScanner
			fresh.write([]byte(body))
			want, wantOK := fresh.result()
			var got Usage
			var gotOK bool
			resp := &http.Response{Header: http.Header{"Content-Type": {"application/json"}}, Body: io.NopCloser(strings.NewReader(body))}
			observeUsage(resp, func(u Usage, ok bool) { got, gotOK = u, ok })
			_, _ = io.ReadAll(resp.Body)
			assert.Equal(t, want, got, body)
			assert.Equal(t, wantOK, gotOK, body)
		}
	}
}

type failingReader struct {
	data []byte
	err  error
}

func (r *failingReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, r.err
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	return n, nil
}

func TestObserveUsageReportsNotOKOnReadErrorBeforeTheEnd(t *testing.T) {
	boom := errors.New("connection reset")
	cut := strings.TrimSuffix(openAIStream, "data: [DONE]\n\n")
	for stream, ok := range map[string]bool{cut: false, openAIStream: true} {
		var rep usageReport
		resp := &http.Response{Header: http.Header{"Content-Type": {"text/event-stream"}},
			Body: io.NopCloser(&failingReader{data: []byte(stream), err: boom})}
		observeUsage(resp, func(u Usage, ok bool) { rep.calls++; rep.ok = ok })
		got, err := io.ReadAll(resp.Body)
		assert.ErrorIs(t, err, boom)
		assert.Equal(t, stream, string(got))
		require.NoError(t, resp.Body.Close())
		assert.Equal(t, usageReport{calls: 1, ok: ok}, rep, "an error after [DONE] is a Close there: %v", ok)
	}
}

func TestObserveUsageReportsAtOnceWithoutABody(t *testing.T) {
	var rep usageReport
	observeUsage(&http.Response{}, func(u Usage, ok bool) { rep.calls++; rep.ok = ok })
	assert.Equal(t, usageReport{calls: 1}, rep)
}

func TestObserveUsageReadsAStreamOverLoopback(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for _, frame := range strings.SplitAfter(openAIStream, "\n\n") {
			_, _ = io.WriteString(w, frame)
			w.(http.Flusher).Flush()
		}
	}))
	defer srv.Close()
	client := srv.Client()
	defer client.CloseIdleConnections()

	resp, err := client.Get(srv.URL)
	require.NoError(t, err)
	var rep usageReport
	observeUsage(resp, func(u Usage, ok bool) { rep.calls++; rep.u, rep.ok = u, ok })
	got, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	assert.Equal(t, openAIStream, string(got))
	assert.Equal(t, usageReport{1, Usage{InputTokens: 19, OutputTokens: 2}, true}, rep)
}

// A JSON answer's reader gives each Read what the body's Read gave: over
// HTTP/1, net/http gives a body of known length its last bytes with
// io.EOF, and so must the reader (a caller then needs no second Read to
// learn of the end); over HTTP/2 the end comes alone. Either way the usage
// is reported once, at the end.
func TestObserveUsageGivesTheEndWithTheLastBytesAsTheBodyDoes(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, openAIJSON)
		}))
		srv.EnableHTTP2 = h2
		srv.StartTLS()
		resp, err := srv.Client().Get(srv.URL)
		require.NoError(t, err)
		require.Equal(t, h2, resp.ProtoMajor == 2)
		var rep usageReport
		observeUsage(resp, func(u Usage, ok bool) { rep.calls++; rep.u, rep.ok = u, ok })
		buf := make([]byte, 4<<10)
		n, err := resp.Body.Read(buf)
		require.Equal(t, openAIJSON, string(buf[:n]), "HTTP/2: %v", h2)
		if !h2 {
			assert.Equal(t, io.EOF, err, "HTTP/1: the last bytes come with the end")
		} else {
			require.NoError(t, err)
			assert.Equal(t, 0, rep.calls)
			n, err = resp.Body.Read(buf)
			assert.Equal(t, 0, n)
			assert.Equal(t, io.EOF, err)
		}
		require.NoError(t, resp.Body.Close())
		assert.Equal(t, usageReport{1, Usage{InputTokens: 19, CachedInputTokens: 3, OutputTokens: 10, servedBy: hashModel("gpt-4.1")}, true}, rep, "HTTP/2: %v", h2)
		srv.Close()
	}
}

func TestObserveUsageHandlesEveryChunkBoundary(t *testing.T) {
	samples := []struct{ contentType, body string }{
		{"text/event-stream", openAIStream},
		{"text/event-stream", strings.ReplaceAll(openAIStream, "\n", "\r\n")},
		{"text/event-stream", anthropicStream},
		{"text/event-stream", responsesStream},
		{"application/json", openAIJSON},
		{"application/json", anthropicJSON},
	}
	for _, s := range samples {
		_, whole := observe(t, s.contentType, strings.NewReader(s.body))
		require.True(t, whole.ok)
		for k := 0; k <= len(s.body); k++ {
			got, rep := observe(t, s.contentType, &splitReader{data: []byte(s.body), sizes: []int{k}})
			require.Equal(t, s.body, got, "split at %d", k)
			require.Equal(t, whole, rep, "split at %d", k)
		}
		got, rep := observe(t, s.contentType, iotestOneByte(s.body))
		assert.Equal(t, s.body, got)
		assert.Equal(t, whole, rep, "one byte at a time")
	}
}

func FuzzObserveUsage(f *testing.F) {
	for _, s := range []string{openAIJSON, anthropicJSON, openAIStream, anthropicStream, ": x\r\n\r\ndata: [DONE]\r\n", `{"usage":{"x":`,
		`{"usage":{"prompt_tokens":9,"completion_tokens":8,"prompt_tokens_details":{"audio_tokens":5},"completion_tokens_details":{"audio_tokens":7}}}`,
		`{"usage":{"input_tokens":9,"output_tokens":8,"input_tokens_details":{"image_tokens":5},"output_tokens_details":{"image_tokens":7}}}`,
		`{"usage":{"prompt_tokens":9,"completion_tokens":8,"completion_tokens_details":{"image_tokens":9}}}`} {
		f.Add([]byte(s), true, uint8(7))
		f.Add([]byte(s), false, uint8(1))
	}
	f.Fuzz(func(t *testing.T, body []byte, sse bool, chunk uint8) {
		ct := "application/json"
		if sse {
			ct = "text/event-stream"
		}
		read := func(r io.Reader) (Usage, bool) {
			calls := 0
			var u Usage
			var ok bool
			resp := &http.Response{Header: http.Header{"Content-Type": {ct}}, Body: io.NopCloser(r)}
			observeUsage(resp, func(gotU Usage, gotOK bool) { calls++; u, ok = gotU, gotOK })
			got, err := io.ReadAll(resp.Body)
			if err != nil || !bytes.Equal(got, body) {
				t.Fatalf("caller read %q, %v; want %q", got, err, body)
			}
			_ = resp.Body.Close()
			if calls != 1 {
				t.Fatalf("report called %d times", calls)
			}
			if ok && (u.InputTokens < 0 || u.OutputTokens < 0 || u.CachedInputTokens < 0 ||
				u.CachedInputTokens+u.CacheWriteInputTokens > u.InputTokens || u.InputTokens > maxUsageTokens || u.OutputTokens > maxUsageTokens ||
				u.AudioInputTokens < 0 || u.AudioInputTokens > u.InputTokens || u.AudioOutputTokens < 0 || u.AudioOutputTokens > u.OutputTokens ||
				u.ImageInputTokens < 0 || u.ImageInputTokens > u.InputTokens || u.ImageOutputTokens < 0 || u.ImageOutputTokens > u.OutputTokens) {
				t.Fatalf("reported out-of-range usage %+v", u)
			}
			return u, ok
		}
		wu, wok := read(bytes.NewReader(body))
		cu, cok := read(chunked(body, int(chunk)%17+1))
		if wu != cu || wok != cok {
			t.Fatalf("%q: whole read %+v %v, chunked %+v %v", body, wu, wok, cu, cok)
		}
	})
}

func TestEveryUsageKeyFitsTheLexersKeyBufferEvenEscaped(t *testing.T) {
	// A key that spans reads is kept up to maxLexedKey bytes; longer ones
	// are read as no key this package looks for. Only the keys of the usage
	// object are lexed so; the objects in it are decoded whole.
	for _, name := range usageObjectKeys.names {
		assert.LessOrEqual(t, len(`\u0000`)*len(name), maxLexedKey, name)
	}
}

func TestIsEventStreamReadsTheMediaTypeWhateverItsParametersAndCase(t *testing.T) {
	for ct, want := range map[string]bool{
		"text/event-stream": true, "Text/Event-Stream; charset=utf-8": true, " text/event-stream ;x=y": true,
		"": false, "application/json": false, "text/event": false, "text/event-streams": false, "text/plain; x=text/event-stream": false,
	} {
		assert.Equal(t, want, isEventStream(ct), "%q", ct)
	}
}

// readUsageValue reads the usage value at the start of p (what follows it
// is the rest of an answer) into r, as the value of a usage key that
// matched m, with a usageValue fed the chunks p is cut into at cuts; it
// returns what r then holds, where the value ended in p (-1: it did not),
// and whether it was JSON.
func readUsageValue(r usageReadings, m nameMatch, p []byte, cuts ...int) (usageReadings, int, bool) {
	var v usageValue
	v.start(&r, m)
	from := 0
	for _, to := range append(cuts, len(p)) {
		end, ok := v.read(p[from:to])
		switch {
		case !ok:
			return r, -1, false
		case end >= 0:
			return r, from + end, true
		}
		from = to
	}
	return r, -1, true
}

// checkUsageValueReadsAsItsLexer checks that a usage value read whole in
// one chunk (by readWhole when it takes it) leaves r, before (the
// readings of the values before it), as the value's lexer leaves it when
// the value comes a byte first (which readWhole never takes). It reports
// whether readWhole took the value.
func checkUsageValueReadsAsItsLexer(t *testing.T, before usageReadings, p []byte) bool {
	t.Helper()
	if len(p) < 2 {
		return false
	}
	for _, m := range []nameMatch{exactMatch, foldMatch} {
		want, wantEnd, wantOK := readUsageValue(before, m, p, 1)
		got, gotEnd, gotOK := readUsageValue(before, m, p)
		require.Equal(t, wantOK, gotOK, "%q", p)
		require.Equal(t, wantEnd, gotEnd, "%q", p)
		if wantOK {
			require.Equal(t, want, got, "%q, key matched as %d", p, m)
		}
	}
	return before.readWhole(p) > 0 // before is a copy
}

// usageValueCorpus is usage values as answers and streams send them, each
// followed by the rest of its answer.
func usageValueCorpus() [][]byte {
	var values [][]byte
	for _, a := range []string{openAIJSON, anthropicJSON, openAIStream, responsesStream, benchAnswerSmall, benchAnswer1KiB,
		string(benchAnswerShort), benchStream200, benchAnthropicStream200} {
		for rest, n := a, 0; n < 3; n++ { // a stream's first values, and one of the last
			i := strings.LastIndex(rest, `"usage":`)
			if n < 2 {
				i = strings.Index(rest, `"usage":`)
			}
			if i < 0 {
				break
			}
			rest = rest[i+len(`"usage":`):]
			values = append(values, []byte(rest))
		}
	}
	return values
}

// The one pass that reads a usage value whole in its chunk (readWhole)
// leaves the readings exactly as the value's lexer does, whatever the
// value, the values before it, or the case its key matched in; it declines
// what is not JSON, and the lexer refuses it.
func TestUsageValueReadsWholeAsItsLexer(t *testing.T) {
	g := newJSONGen(43)
	corpus := usageValueCorpus()
	flat := 0
	const n = 20000
	for i := range n {
		var before usageReadings
		for range g.r.IntN(3) {
			var b bytes.Buffer
			g.usageTree(&b, 0, 0)
			before, _, _ = readUsageValue(before, nameMatch(1+g.r.IntN(2)), b.Bytes(), 1)
		}
		var b bytes.Buffer
		switch i % 5 {
		case 0:
			b.Write(corpus[g.r.IntN(len(corpus))])
		case 1:
			g.usageObject(&b)
		case 2:
			g.providerUsage(&b, "")
		default:
			g.usageTree(&b, 0, 0)
		}
		b.WriteString([]string{"", "}", `,"model":"m"}`, " }", ","}[g.r.IntN(5)])
		p := b.Bytes()
		if g.r.IntN(4) == 0 {
			p = g.corrupt(p)
		}
		if checkUsageValueReadsAsItsLexer(t, before, p) {
			flat++
		}
	}
	t.Logf("readWhole took %d of %d values", flat, n)
	require.Greater(t, flat, n/2, "readWhole took few values: the test checks little")
}

func FuzzUsageValueReadsWholeAsItsLexer(f *testing.F) {
	for _, v := range usageValueCorpus() {
		f.Add(v)
	}
	f.Add([]byte(`{"prompt_tokens":1,"Prompt_tokens_details":{"cached_tokens":2},"x":[{"a":null}],"inference_geo":"us"}`))
	f.Add([]byte(`{ "input_tokens" : 5 , "cache_creation" : { "ephemeral_1h_input_tokens" : 1.5e1 } }`))
	f.Fuzz(func(t *testing.T, p []byte) {
		var before usageReadings
		before, _, _ = readUsageValue(before, exactMatch, []byte(`{"prompt_tokens":3,"prompt_tokens_details":{"cached_tokens":1}}`), 1)
		checkUsageValueReadsAsItsLexer(t, usageReadings{}, p)
		checkUsageValueReadsAsItsLexer(t, before, p)
	})
}

// wireUsage keeps its set of counts present as its counts say, whatever
// puts and unsets made them, so that equal reads two usages as == does.
func TestWireUsageEqualReadsAsComparingTheCounts(t *testing.T) {
	g := newJSONGen(53)
	counts := []int64{-5, -1, 0, 1, 7, maxUsageTokens, maxUsageTokens + 1, 1 << 40}
	for range 20000 {
		var a, b wireUsage
		for _, w := range []*wireUsage{&a, &b} {
			for range g.r.IntN(6) {
				f := usageField(g.r.IntN(4)) // a few fields, so that the two often agree
				if g.r.IntN(4) == 0 {
					w.unset(f)
				} else {
					w.put(f, counts[g.r.IntN(len(counts))])
				}
			}
			for f := range wireCounts {
				require.Equal(t, w.n[f] != 0, w.has(f), "count %d of %v", f, *w)
			}
		}
		require.Equal(t, a == b, a.equal(&b), "%v and %v", a, b)
	}
}

// writtenKey reads a key written as a name of its object, or as a key no
// count reads, as lookupName does.
func TestWrittenKeysReadAsLookupName(t *testing.T) {
	for obj := range usageObjects {
		o := &usageObjects[obj]
		for j, w := range o.written[1:] {
			name := w.s[1 : len(w.s)-2]
			k, m := lookupName([]byte(name), false, o.names)
			assert.Equal(t, m, nameMatch(b2u(w.k >= 0)), "%s in object %d", name, obj)
			if m != noMatch {
				assert.Equal(t, k, int(w.k), name)
			}
			assert.Same(t, &o.written[j+1], o.writtenKey([]byte(w.s+"1}"), 0), name)
		}
		for i, name := range o.names {
			if len(name) < 5 { // "cost": read by key alone (see indexWritten)
				assert.False(t, slices.ContainsFunc(o.written, func(w writtenName) bool { return int(w.k) == i }), name)
				continue
			}
			assert.True(t, slices.ContainsFunc(o.written, func(w writtenName) bool { return int(w.k) == i }), "%s is not in object %d's written keys", name, obj)
		}
		assert.Nil(t, o.writtenKey([]byte(`"prompt_tokens_":1}`), 0))
	}
}

// A model's hash reads every byte of its name, the same from a string or
// bytes, and readModel reads a name with a backslash wherever it is as
// encoding/json decodes it, or refuses it when it is no valid escape.
func TestHashModelReadsEveryByteAndFindsEveryBackslash(t *testing.T) {
	for n := range 40 {
		name := []byte(strings.Repeat("gpt-4.1-mini-2025-04-14/x", 2)[:n])
		h := hashModel(name)
		require.Equal(t, h, hashModel(string(name)), "%q", name)
		require.NotZero(t, h)
		require.Equal(t, h, readModel([]byte(`"`+string(name)+`"`), true), "%q", name)
		for j := range n {
			changed := slices.Clone(name)
			changed[j] ^= 0x20
			assert.NotEqual(t, h, hashModel(changed), "%q and %q", name, changed)
			changed[j] = '\\'
			var decoded string
			want := modelHash(0)
			if json.Unmarshal([]byte(`"`+string(changed)+`"`), &decoded) == nil {
				want = hashModel(decoded)
			}
			assert.Equal(t, want, readModel([]byte(`"`+string(changed)+`"`), true), "%q", changed)
		}
		assert.NotEqual(t, h, hashModel(string(name)+"\x00"), "%q", name)
	}
}

// chatTokenParts names exactly the counts tokens reads in an OpenAI chat
// usage besides its prompt and completion tokens: tokens skips them all
// when none is present. Each count is also read beside an audio part of
// 0, which reads as none but makes tokens read the parts: a count tokens
// reads there that chatTokenParts leaves out, skipped alone, is seen.
func TestChatTokenPartsAreTheCountsTokensReadsInAChatUsage(t *testing.T) {
	var chat wireUsage
	chat.put(promptTokens, 100)
	chat.put(completionTokens, 50)
	withPart := chat
	withPart.put(promptAudioTokens, 0)
	var plain, plainWithPart Usage
	require.True(t, chat.tokens(&plain))
	require.True(t, withPart.tokens(&plainWithPart))
	require.Equal(t, plain, plainWithPart, "a part of 0 reads as none")
	for f := range wireCounts {
		if f == promptTokens || f == completionTokens {
			continue
		}
		for _, w := range []wireUsage{chat, withPart} {
			w.put(f, 7)
			if f == cacheReadInputTokens || f == promptCacheMissTokens {
				w.put(f, 700) // read only above prompt_tokens, which holds the reads (or misses) it can
			}
			var u Usage
			require.True(t, w.tokens(&u))
			assert.Equal(t, chatTokenParts&(1<<f) != 0, u != plain, "count %d, beside a part: %v", f, w.has(promptAudioTokens))
		}
	}
}

// usageReadings keeps the others' reading apart from encoding/json's only
// once they may differ (split); until then it reads as merged. Readings
// split from the start keep both at every step, as they were kept before:
// over sequences of usage values, in either case of the key, whole or
// lexed, with nulls and repeated details objects, the two read alike.
func TestUsageReadingsReadAsReadingsKeptApart(t *testing.T) {
	g := newJSONGen(59)
	corpus := usageValueCorpus()
	for i := range 20000 {
		var lazy usageReadings
		eager := usageReadings{split: true}
		for range 1 + g.r.IntN(3) {
			var b bytes.Buffer
			switch i % 4 {
			case 0:
				b.Write(corpus[g.r.IntN(len(corpus))])
			case 1:
				g.providerUsage(&b, "")
			case 2:
				b.WriteString(`null`)
			default:
				g.usageTree(&b, 0, 0)
			}
			p := b.Bytes()
			if g.r.IntN(4) == 0 {
				p = g.corrupt(p)
			}
			checkReadingsKeptApart(t, &lazy, &eager, p, g.r.IntN(4) == 0, g.r.IntN(2) == 0)
		}
	}
}

func FuzzUsageReadingsReadAsReadingsKeptApart(f *testing.F) {
	for _, v := range usageValueCorpus() {
		f.Add(v, uint8(0))
	}
	f.Add([]byte(`{"prompt_tokens":1,"prompt_tokens_details":{"cached_tokens":2}}`+"\x00"+`{"prompt_tokens":3}`+"\x00null"), uint8(0x12))
	f.Add([]byte(`{"input_tokens":1,"output_tokens":null}`+"\x00"+`{"Output_tokens":5,"input_tokens":1}`), uint8(0x21))
	f.Fuzz(func(t *testing.T, values []byte, flags uint8) {
		var lazy usageReadings
		eager := usageReadings{split: true}
		for n, p := range bytes.Split(values, []byte{0}) {
			if n == 4 {
				break
			}
			checkReadingsKeptApart(t, &lazy, &eager, p, flags&(1<<n) != 0, flags&(16<<n) != 0)
		}
	})
}

// checkReadingsKeptApart reads the usage value p, under a usage key in
// another case when folded and a byte at a time first when lexed, into
// lazy and eager, and checks that the two read alike.
func checkReadingsKeptApart(t *testing.T, lazy, eager *usageReadings, p []byte, folded, lexed bool) {
	t.Helper()
	m := nameMatch(1 + b2u(folded))
	var cuts []int
	if len(p) > 1 && lexed {
		cuts = []int{1} // lexed, not read whole
	}
	var lazyEnd, eagerEnd int
	*lazy, lazyEnd, _ = readUsageValue(*lazy, m, p, cuts...)
	*eager, eagerEnd, _ = readUsageValue(*eager, m, p, cuts...)
	require.Equal(t, eagerEnd, lazyEnd, "%q", p)
	w, ok := lazy.get()
	ew, eok := eager.get()
	require.Equal(t, eok, ok, "%q", p)
	require.Equal(t, *ew, *w, "%q", p)
	d, dok := lazy.dearest()
	ed, edok := eager.dearest()
	require.Equal(t, edok, dok, "%q", p)
	require.Equal(t, ed, d, "%q", p)
}

// A usage of prompt, completion and total tokens alone, most chat
// answers', is read by readPlainChat without the other formats' cases:
// as readAnyUsage reads it, whatever its counts, lying ones included.
func TestReadPlainChatReadsAsReadAnyUsage(t *testing.T) {
	g := newJSONGen(67)
	counts := []int64{-5, -1, 0, 1, 7, 16, 2100, maxUsageTokens - 1, maxUsageTokens, maxUsageTokens + 1, 1 << 40}
	plain := 0
	for range 50000 {
		var w wireUsage
		for _, f := range []usageField{promptTokens, completionTokens, totalTokens} {
			if g.r.IntN(4) != 0 {
				w.put(f, counts[g.r.IntN(len(counts))])
			}
		}
		var got, want Usage
		ok := w.readUsage(&got)
		wantOK := w.readAnyUsage(&want)
		require.Equal(t, wantOK, ok, "%+v", w)
		require.Equal(t, want, got, "%+v", w)
		if w.set&^(1<<totalTokens) != 0 {
			plain++
		}
	}
	require.Greater(t, plain, 40000, "few usages took readPlainChat: the test checks little")
}

func FuzzReadPlainChatReadsAsReadAnyUsage(f *testing.F) {
	f.Add(uint8(7), int64(9), int64(7), int64(16))
	f.Add(uint8(3), int64(-1), int64(maxUsageTokens+1), int64(0))
	f.Add(uint8(6), int64(0), int64(5), int64(maxUsageTokens+7))
	f.Fuzz(func(t *testing.T, present uint8, prompt, completion, total int64) {
		var w wireUsage
		for i, f := range []usageField{promptTokens, completionTokens, totalTokens} {
			if present&(1<<i) != 0 {
				w.put(f, []int64{prompt, completion, total}[i])
			}
		}
		var got, want Usage
		ok := w.readUsage(&got)
		require.Equal(t, w.readAnyUsage(&want), ok, "%+v", w)
		require.Equal(t, want, got, "%+v", w)
	})
}
