package proxy

import (
	"encoding/json"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/holysheep/httpguard"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const twoTenants = `upstreams:
  - prefix: /v1
    url: https://api.holysheep.ai/v1
    key_env: HOLYSHEEP_API_KEY
    fallbacks:
      - name: openai
        base_url: https://api.openai.com/v1
        key_env: OPENAI_API_KEY
        models: {deepseek-v3.2: gpt-4.1-mini}
    breaker: {consecutive_failures: 5, failure_ratio: 0.5, min_calls: 20, ratio_window: 30s, cool_down: 30s, probes: 3}
  - prefix: /v1/messages
    url: https://api.anthropic.com/v1/messages
    api: anthropic
    key_env: ANTHROPIC_API_KEY
prices:
  deepseek-v3.2: {input: 0.28, cached_input: 0.028, output: 0.42}
  gpt-4.1-mini: {input: 0.4, cached_input: 0.1, output: 1.6}
  claude-sonnet-4-5: {input: 3, cached_input: 0.3, cache_write: 3.75, cache_write_1h: 6, output: 15,
    long_context: {above: 200000, input: 6, cached_input: 0.6, cache_write: 7.5, cache_write_1h: 12, output: 22.5}}
tool_prices: {web_search: 0.01}  # dollars per call of a tool the provider runs (see the Budget)
tool_result_reserve: 10000       # input tokens reserved for what one call of such a tool returns
tenants:
  - name: search
    key_sha256: 5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8
    budget: {limit: 20, period: daily}
    limits: {rps: 5, burst: 10, tpm: 200000}
    models: [deepseek-v3.2]
  - name: support-bot
    key_sha256: 6b3a55e0261b0304143f805a24924d0c1c44524821305f31d9277843b8a10f4e
    budget: {limit: "0.50", window: 1h}
`

func TestParseFileReadsUpstreamsPricesAndTenants(t *testing.T) {
	f, err := ParseFile(strings.NewReader(twoTenants), "proxy.yaml")
	require.NoError(t, err)
	require.Len(t, f.Upstreams, 2)
	assert.Equal(t, "/v1/messages", f.Upstreams[1].Prefix)
	assert.Equal(t, Anthropic, f.Upstreams[1].API)
	assert.Equal(t, OpenAI, f.Upstreams[0].API)
	assert.Equal(t, "https://api.anthropic.com/v1/messages", f.Upstreams[1].URL.String())
	assert.Nil(t, f.Upstreams[1].Breaker)
	assert.Equal(t, &BreakerSpec{ConsecutiveFailures: 5, FailureRatio: 0.5, MinCalls: 20, RatioWindow: 30 * time.Second,
		CoolDown: 30 * time.Second, Probes: 3}, f.Upstreams[0].Breaker)
	require.Len(t, f.Upstreams[0].Fallbacks, 1)
	fb := f.Upstreams[0].Fallbacks[0]
	assert.Equal(t, "openai", fb.Name)
	assert.Equal(t, "https://api.openai.com/v1", fb.URL.String())
	assert.Equal(t, "OPENAI_API_KEY", fb.KeyEnv)
	assert.Equal(t, map[string]string{"deepseek-v3.2": "gpt-4.1-mini"}, fb.Models)
	assert.Equal(t, "proxy.yaml:9", fb.modelsPos["deepseek-v3.2"])
	assert.Equal(t, httpguard.Price{Input: 28 * httpguard.Cent, CachedInput: 28 * httpguard.Cent / 10, Output: 42 * httpguard.Cent}, f.Prices["deepseek-v3.2"])
	assert.Equal(t, 375*httpguard.Cent, f.Prices["claude-sonnet-4-5"].CacheWrite)
	assert.Equal(t, 6*httpguard.Dollar, f.Prices["claude-sonnet-4-5"].CacheWrite1h)
	assert.Equal(t, 225*httpguard.Dollar/10, f.Prices["claude-sonnet-4-5"].LongContext.Output)
	require.Len(t, f.Tenants, 2)
	s := f.Tenants[0]
	assert.Equal(t, keyHash("password"), s.KeySHA256)
	assert.Equal(t, &BudgetSpec{Limit: 20 * httpguard.Dollar, Period: httpguard.Daily}, s.Budget)
	assert.Equal(t, LimitSpec{RPS: 5, Burst: 10, TPM: 200000}, s.Limits)
	assert.Equal(t, []string{"deepseek-v3.2"}, s.Models)
	assert.Equal(t, &BudgetSpec{Limit: 50 * httpguard.Cent, Window: 3600e9}, f.Tenants[1].Budget)
}

func TestParseFileReadsAudioPrices(t *testing.T) {
	f, err := ParseFile(strings.NewReader(strings.Replace(twoTenants, "prices:\n",
		"prices:\n  gpt-4o-audio-preview: {input: 2.5, output: 10, audio_input: 40, audio_output: 80}\n", 1)), "proxy.yaml")
	require.NoError(t, err)
	assert.Equal(t, httpguard.Price{Input: 250 * httpguard.Cent, Output: 10 * httpguard.Dollar,
		AudioInput: 40 * httpguard.Dollar, AudioOutput: 80 * httpguard.Dollar}, f.Prices["gpt-4o-audio-preview"])
}

func TestParseFileReadsImagePrices(t *testing.T) {
	f, err := ParseFile(strings.NewReader(strings.Replace(twoTenants, "prices:\n",
		"prices:\n  gpt-image-1: {input: 5, output: 40, image_input: 10, image_output: 40, long_context: {above: 100, input: 5, output: 40, image_input: 20}}\n", 1)), "proxy.yaml")
	require.NoError(t, err)
	assert.Equal(t, httpguard.Price{Input: 5 * httpguard.Dollar, Output: 40 * httpguard.Dollar,
		ImageInput: 10 * httpguard.Dollar, ImageOutput: 40 * httpguard.Dollar, LongContext: &httpguard.LongContextPrice{
			Above: 100, Price: httpguard.Price{Input: 5 * httpguard.Dollar, Output: 40 * httpguard.Dollar, ImageInput: 20 * httpguard.Dollar}}},
		f.Prices["gpt-image-1"])
}

func TestParseFileReadsLongContextPrices(t *testing.T) {
	f, err := ParseFile(strings.NewReader(strings.Replace(twoTenants, "prices:\n",
		"prices:\n  claude-sonnet-4: {input: 3, output: 15, long_context: {above: 200000, input: 6, output: 22.5}}\n", 1)), "proxy.yaml")
	require.NoError(t, err)
	assert.Equal(t, httpguard.Price{Input: 3 * httpguard.Dollar, Output: 15 * httpguard.Dollar, LongContext: &httpguard.LongContextPrice{
		Above: 200_000, Price: httpguard.Price{Input: 6 * httpguard.Dollar, Output: 2250 * httpguard.Cent}}}, f.Prices["claude-sonnet-4"])

	for _, bad := range []string{"{above: 200000, input: 6}", "{input: 6, output: 22.5}", "{above: 1, input: 6, output: 22.5, long_context: {}}", "6"} {
		_, err := ParseFile(strings.NewReader("prices:\n  m: {input: 3, output: 15, long_context: "+bad+"}\n"), "p.yaml")
		assert.ErrorContains(t, err, "p.yaml:2", bad)
		assert.ErrorContains(t, err, "long_context", bad)
	}
}

func TestParseFileReadsToolPrices(t *testing.T) {
	f, err := ParseFile(strings.NewReader("tool_prices: {web_search: 0.01, Code_Interpreter: \"0.03\", web_fetch: 0}\n"), "p.yaml")
	require.NoError(t, err)
	assert.Equal(t, map[string]httpguard.Money{"web_search": httpguard.Cent, "code_interpreter": 3 * httpguard.Cent, "web_fetch": 0}, f.ToolPrices)
}

func TestParseFileReadsToolReserves(t *testing.T) {
	f, err := ParseFile(strings.NewReader("tool_call_reserve: 5\ntool_result_reserve: 8000\n"), "p.yaml")
	require.NoError(t, err)
	assert.Equal(t, int64(5), f.ToolCallReserve)
	assert.Equal(t, int64(8000), f.ToolResultReserve)
	for yaml, msg := range map[string]string{
		"tool_call_reserve: 0\n":      "p.yaml:1: tool_call_reserve must be a whole number above 0",
		"tool_result_reserve: -1\n":   "p.yaml:1: tool_result_reserve must be a whole number above 0",
		"tool_result_reserve: many\n": "p.yaml:1: tool_result_reserve must be a whole number above 0",
	} {
		_, err := ParseFile(strings.NewReader(yaml), "p.yaml")
		assert.ErrorContains(t, err, msg, yaml)
	}
}

func TestATenantsMaxWaitIsReadAsWritten(t *testing.T) {
	for yaml, want := range map[string]time.Duration{
		"":                0, // absent: the library's default (30s)
		", max_wait: 10s": 10 * time.Second,
		", max_wait: 0s":  -1, // refuse at once rather than wait
	} {
		f, err := ParseFile(strings.NewReader("upstreams:\n  - prefix: /v1\n    url: http://x/v1\ntenants:\n  - name: a\n    key_sha256: "+
			strings.Repeat("ab", 32)+"\n    limits: {rps: 1"+yaml+"}\n"), "p.yaml")
		require.NoError(t, err, yaml)
		assert.Equal(t, want, f.Tenants[0].Limits.MaxWait, yaml)
	}
	_, err := ParseFile(strings.NewReader("upstreams:\n  - prefix: /v1\n    url: http://x/v1\ntenants:\n  - name: a\n    key_sha256: "+
		strings.Repeat("ab", 32)+"\n    limits: {rps: 1, max_wait: -1s}\n"), "p.yaml")
	assert.ErrorContains(t, err, "p.yaml:7: max_wait must be a duration >= 0")
}

func TestAnEmptyModelListIsAnError(t *testing.T) {
	_, err := ParseFile(strings.NewReader("upstreams:\n  - prefix: /v1\n    url: http://x/v1\ntenants:\n  - name: a\n    key_sha256: "+
		strings.Repeat("ab", 32)+"\n    models: []\n"), "p.yaml")
	assert.ErrorContains(t, err, "p.yaml:7: models is empty")
}

func TestAnEmptyBreakerBlockIsTheLibrarysDefaults(t *testing.T) {
	f, err := ParseFile(strings.NewReader("upstreams:\n  - prefix: /v1\n    url: http://x/v1\n    breaker: {}\n"), "p.yaml")
	require.NoError(t, err)
	assert.Equal(t, &BreakerSpec{}, f.Upstreams[0].Breaker)
}

func TestParseFileNamesTheLineAtFault(t *testing.T) {
	const up = "upstreams:\n  - prefix: /v1\n    url: http://x/v1\n"
	for _, tc := range []struct{ name, yaml, want string }{
		{"unknown field", "upstreams:\n  - prefix: /v1\n    url: http://x/v1\n    keyenv: K\n", `p.yaml:4: unknown field "keyenv" in an upstream`},
		{"bad money", "tenants:\n  - name: a\n    key_sha256: " + strings.Repeat("ab", 32) + "\n    budget: {limit: ten}\n", "p.yaml:4: limit:"},
		{"negative price", "prices:\n  m: {input: 1, output: -2}\n", `p.yaml:2: model "m": Output must be >= 0`},
		{"missing price", "prices:\n  m: {input: 1}\n", `p.yaml:2: model "m": output is missing`},
		{"tool prices: a list", "tool_prices: [web_search]\n", "p.yaml:1: tool_prices must be a mapping of tool types to dollars per call"},
		{"tool prices: negative", "tool_prices:\n  web_search: -0.01\n", `p.yaml:2: tool_prices: "web_search": a fee must be a decimal number of dollars per call, at least 0`},
		{"tool prices: not money", "tool_prices:\n  web_search: cheap\n", `p.yaml:2: tool_prices: "web_search": a fee must be`},
		{"tool prices: a mapping", "tool_prices:\n  web_search: {per_call: 0.01}\n", "p.yaml:2: web_search must be a single value"},
		{"tool prices: repeated", "tool_prices:\n  web_search: 0.01\n  Web_Search: 0.02\n", `p.yaml:3: tool_prices repeat "Web_Search"`},
		{"short hash", "tenants:\n  - name: a\n    key_sha256: abc\n", "p.yaml:3: key_sha256 must be 64 hex digits"},
		{"no hash", "tenants:\n  - name: a\n", `p.yaml:2: tenant "a" needs key_sha256`},
		{"same key", "tenants:\n  - name: a\n    key_sha256: " + strings.Repeat("ab", 32) + "\n  - name: b\n    key_sha256: " + strings.Repeat("ab", 32) + "\n",
			`p.yaml:4: tenants "a" and "b" have the same key`},
		{"bad prefix", "upstreams:\n  - prefix: v1/\n    url: http://x\n", "p.yaml:2: prefix:"},
		{"bad url", "upstreams:\n  - prefix: /v1\n    url: ftp://x\n", "p.yaml:3: url:"},
		{"window of months as minutes", "tenants:\n  - name: a\n    key_sha256: " + strings.Repeat("ab", 32) + "\n    budget: {limit: 1, window: 1m}\n",
			`p.yaml:4: window: "1m" is 1m0s, not months: for a monthly budget use period: monthly (--budget-period monthly); write a window of minutes in seconds (60s)`},
		{"window and period", "tenants:\n  - name: a\n    key_sha256: " + strings.Repeat("ab", 32) + "\n    budget: {limit: 1, window: 1h, period: daily}\n", "set window or period, not both"},
		{"bad limits", "tenants:\n  - name: a\n    key_sha256: " + strings.Repeat("ab", 32) + "\n    limits: {tpm: 10}\n", "p.yaml:4: limits: TokensPerMinute 10 is too small"},
		{"limits without a rate", "tenants:\n  - name: a\n    key_sha256: " + strings.Repeat("ab", 32) + "\n    limits: {burst: 5, max_wait: 5s}\n",
			"p.yaml:4: limits: set rps or tpm above 0"},
		{"burst without rps", "tenants:\n  - name: a\n    key_sha256: " + strings.Repeat("ab", 32) + "\n    limits: {tpm: 100000, burst: 5}\n",
			"p.yaml:4: limits: burst without rps limits nothing"},
		{"limits of zero", "tenants:\n  - name: a\n    key_sha256: " + strings.Repeat("ab", 32) + "\n    limits: {rps: 0}\n", "p.yaml:4: limits: set rps or tpm above 0"},
		{"bad api", "upstreams:\n  - prefix: /v1\n    url: http://x\n    api: gemini\n", "p.yaml:4: api must be openai or anthropic"},
		{"not yaml", "upstreams: [", "p.yaml: yaml:"},
		{"breaker: zero failures", up + "    breaker:\n      consecutive_failures: 0\n", "p.yaml:5: consecutive_failures must be a whole number >= 1, or off"},
		{"breaker: ratio above 1", up + "    breaker: {failure_ratio: 1.5}\n", "p.yaml:4: failure_ratio must be a number above 0 and at most 1"},
		{"breaker: negative cool-down", up + "    breaker:\n      probes: 2\n      cool_down: -1s\n", "p.yaml:6: cool_down must be a duration above zero"},
		{"breaker: no probes", up + "    breaker: {probes: 0}\n", "p.yaml:4: probes must be a whole number from 1 to 1000"},
		{"breaker: every rule off", up + "    breaker:\n      consecutive_failures: off\n      min_calls: off\n", "p.yaml:5: consecutive_failures and min_calls are both off"},
		{"breaker: not a bool", up + "    breaker: {allow_unterminated_streams: yes}\n", "p.yaml:4: allow_unterminated_streams must be true or false"},
		{"breaker: typo", up + "    breaker: {cooldown: 1s}\n", `p.yaml:4: unknown field "cooldown" in a breaker`},
		{"fallback: no base_url", up + "    fallbacks:\n      - key_env: K\n", "p.yaml:5: a fallback needs a base_url"},
		{"fallback: no key_env", up + "    fallbacks:\n      - base_url: http://y/v1\n", "p.yaml:5: a fallback needs key_env"},
		{"fallback: a key in the file", up + "    fallbacks:\n      - base_url: http://y/v1\n        key_env: K\n        headers: {x-api-key: sk-1}\n",
			"p.yaml:7: headers may not set x-api-key: the key comes from key_env"},
		{"upstream: a key in the file", up + "    headers: {Authorization: Bearer sk-1}\n", "p.yaml:4: headers may not set Authorization: the key comes from key_env"},
		{"upstream: a bad header", up + "    headers: {host: evil}\n", `p.yaml:4: headers: "host" is not a header an upstream can set`},
		{"upstream: a hop-by-hop header", up + "    headers:\n      x-portkey-provider: openai\n      connection: close\n", "p.yaml:6: headers may not set connection: it speaks of one connection"},
		{"fallback: a hop-by-hop header", up + "    fallbacks:\n      - base_url: http://y/v1\n        key_env: K\n        headers: {Upgrade: websocket}\n",
			"p.yaml:7: headers may not set Upgrade: it speaks of one connection"},
		{"fallback: an open proxy", up + "    fallbacks:\n      - base_url: http://y/v1?to=evil\n        key_env: K\n", "p.yaml:5: base_url:"},
		{"fallback: its name taken", up + "    fallbacks:\n      - base_url: http://x/other\n        key_env: K\n", `p.yaml:5: the name "x" is taken`},
		{"fallback: an empty model", up + "    fallbacks:\n      - base_url: http://y/v1\n        key_env: K\n        models: {a: \"\"}\n", `p.yaml:7: models maps "a" to ""`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseFile(strings.NewReader(tc.yaml), "p.yaml")
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

// Was a bug: an upstream's or a fallback's headers could set a header that
// speaks of one connection or of the message's framing. net/http dropped
// some silently (Transfer-Encoding, Content-Length), obeyed others
// (Connection: close opened a connection for every attempt), and its
// HTTP/2 transport refused every request carrying Connection, Upgrade or
// Transfer-Encoding: the proxy started, and every request failed with 502.
func TestAConfigsHeadersMayNotSetAHopByHopHeader(t *testing.T) {
	for _, name := range []string{"Connection", "keep-alive", "Proxy-Connection", "Proxy-Authenticate", "TE", "Trailer", "Transfer-Encoding",
		"Upgrade", "HTTP2-Settings", "Content-Length", "Expect"} {
		yaml := "upstreams:\n  - prefix: /v1\n    url: http://x/v1\n    headers:\n      " + name + ": \"1\"\n"
		_, err := ParseFile(strings.NewReader(yaml), "p.yaml")
		require.Error(t, err, name)
		assert.Contains(t, err.Error(), "p.yaml:5: headers may not set "+name+": ", name)
	}
	_, err := ParseFile(strings.NewReader("upstreams:\n  - prefix: /v1\n    url: http://x/v1\n    headers: {x-portkey-provider: openai, Content-Type-Hint: a, X-Proxy-Team: b}\n"), "p.yaml")
	assert.NoError(t, err, "a header about the request is the operator's to set")
}

func TestNewRefusesAConfigItCannotRun(t *testing.T) {
	u := []Upstream{{Prefix: "/v1", URL: mustURL(t, "http://127.0.0.1:1/v1"), KeyEnv: "K"}}
	for _, tc := range []struct {
		name string
		c    Config
		want string
	}{
		{"no upstream", Config{}, "no upstream"},
		{"budget without prices", Config{Upstreams: u, Budget: &BudgetSpec{Limit: httpguard.Dollar}}, "a budget needs prices"},
		{"missing real key", Config{Upstreams: u, Tenants: []Tenant{{Name: "a"}}, Getenv: func(string) string { return "" }},
			"the environment variable K, holding its real key for the tenants, is empty or unset"},
		{"reserved name", Config{Upstreams: u, Tenants: []Tenant{{Name: "proxy"}}, Getenv: func(string) string { return "k" }},
			`a tenant may not be named "proxy"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := New(tc.c)
			assert.Nil(t, p)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

// withoutLine returns yaml without the line holding s.
func withoutLine(yaml, s string) string {
	i := strings.Index(yaml, s)
	start := strings.LastIndexByte(yaml[:i], '\n') + 1
	return yaml[:start] + yaml[i+strings.IndexByte(yaml[i:], '\n')+1:]
}

func TestNewNamesTheConfigLineOfAFallbackItCannotRun(t *testing.T) {
	// twoTenants falls back to openai (line 6), asking for gpt-4.1-mini
	// instead of deepseek-v3.2 (line 9).
	keys := map[string]string{"HOLYSHEEP_API_KEY": "sk-hs", "OPENAI_API_KEY": "sk-oa", "ANTHROPIC_API_KEY": "sk-an"}
	for _, tc := range []struct {
		name, yaml string
		unset      string
		want       string
	}{
		{"missing key", twoTenants, "OPENAI_API_KEY", `p.yaml:6: fallback "openai": the environment variable "OPENAI_API_KEY" (key_env) is empty or unset`},
		{"unpriced model", withoutLine(twoTenants, "gpt-4.1-mini: {"), "",
			`p.yaml:9: fallback "openai": model "gpt-4.1-mini" (asked for instead of "deepseek-v3.2") has no price, and the prices have no "*" entry`},
		{"no tenants", strings.Split(twoTenants, "tenants:")[0], "", "p.yaml:6: upstream /v1: fallbacks need tenants"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := ParseFile(strings.NewReader(tc.yaml), "p.yaml")
			require.NoError(t, err)
			getenv := func(k string) string {
				if k == tc.unset {
					return ""
				}
				return keys[k]
			}
			p, err := New(Config{Upstreams: f.Upstreams, Prices: f.Prices, Tenants: f.Tenants, Getenv: getenv})
			assert.Nil(t, p)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
			assert.NotContains(t, err.Error(), "sk-")
		})
	}
}

func TestFallbackModelsArePricedByTheStarEntryOrNeedNoPriceWithoutBudgets(t *testing.T) {
	keys := func(k string) string { return "sk-" + k }
	f, err := ParseFile(strings.NewReader(withoutLine(twoTenants, "gpt-4.1-mini: {")), "p.yaml")
	require.NoError(t, err)
	c := Config{Upstreams: f.Upstreams, Prices: f.Prices, Tenants: f.Tenants, Getenv: keys}
	c.Prices[httpguard.FallbackModel] = httpguard.Price{Input: httpguard.Dollar, Output: httpguard.Dollar}
	p, err := New(c)
	require.NoError(t, err)
	require.NoError(t, p.Close())

	c = Config{Upstreams: f.Upstreams, Tenants: slices.Clone(f.Tenants), Getenv: keys}
	c.Tenants[0].Budget, c.Tenants[1].Budget = nil, nil
	p, err = New(c)
	require.NoError(t, err, "no budget: nothing needs a price")
	require.NoError(t, p.Close())
}

func TestRequestModel(t *testing.T) {
	for body, want := range map[string]string{
		`{"model":"m","messages":[]}`:                "m",
		`  {"messages":[{"model":"x"}],"model":"m"}`: "m",
		`{"messages":[]}`:                            "",
		`not json`:                                   "",
		`[1,2]`:                                      "",
		`{"model":`:                                  "",
	} {
		f, err := readRequest([]byte(body))
		got := f.model
		assert.NoError(t, err, body)
		assert.Equal(t, want, got, body)
	}
	for _, body := range []string{`{"model":"a","model":"b"}`, `{"Model":"a"}`, `{"model":1}`, `{"model":"a","mod\u0065l":"b"}`} {
		_, err := readRequest([]byte(body))
		assert.Error(t, err, body)
	}
}

func FuzzRequestModel(f *testing.F) {
	f.Add([]byte(`{"model":"m","messages":[{"role":"user","content":"hi"}]}`))
	f.Add([]byte(`{"model":"a","model":"b"}`))
	f.Add([]byte(`{"MODEL":"a"}`))
	f.Add([]byte(`{"a":{"model":"x"},"b":["}",{"c":"]\\"}],"model":"m\u00e9"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		f, err := readRequest(body)
		model := f.model
		// encoding/json, which takes the last of repeated keys and matches
		// them in any case, must agree whenever readRequest accepts.
		var want struct{ Model *string }
		if json.Unmarshal(body, &want) != nil || err != nil {
			return
		}
		if want.Model == nil && model != "" || want.Model != nil && *want.Model != model {
			t.Fatalf("readRequest says %q, encoding/json %v", model, want.Model)
		}
	})
}

func TestTheREADMEsConfigExampleParses(t *testing.T) {
	readme, err := os.ReadFile("../../../../README.md")
	require.NoError(t, err)
	_, rest, ok := strings.Cut(string(readme), "### Config: upstreams, prices, tenants\n\n```yaml\n")
	require.True(t, ok, "the README's config example")
	example, _, ok := strings.Cut(rest, "```")
	require.True(t, ok)
	f, err := ParseFile(strings.NewReader(example), "test")
	require.NoError(t, err)
	want, err := ParseFile(strings.NewReader(twoTenants), "test")
	require.NoError(t, err)
	assert.Equal(t, want, f, "the README shows the config this file tests")
}

func TestParseFileReadsAFeePerRequest(t *testing.T) {
	f, err := ParseFile(strings.NewReader("prices:\n  sonar: {input: 1, output: 1, request: 0.005}\n"), "p.yaml")
	require.NoError(t, err)
	assert.Equal(t, httpguard.Price{Input: httpguard.Dollar, Output: httpguard.Dollar, Request: 5 * httpguard.Cent / 10}, f.Prices["sonar"])
}

func TestParseWindowRefusesMinutesThatReadAsMonths(t *testing.T) {
	for s, want := range map[string]time.Duration{"1h": time.Hour, "24h": 24 * time.Hour, "720h": 720 * time.Hour, "60s": time.Minute,
		"15m": 15 * time.Minute, "90m": 90 * time.Minute, "1h30m": 90 * time.Minute, "0.5h": 30 * time.Minute} {
		d, err := ParseWindow(s)
		require.NoError(t, err, s)
		require.Equal(t, want, d, s)
	}
	for _, s := range []string{"1m", "3m", "6m", "12m", "01m", "+1m"} {
		_, err := ParseWindow(s)
		require.ErrorContains(t, err, "not months", s)
	}
}

func TestParseWindowRefusesWindowsShorterThanAMinute(t *testing.T) {
	for _, s := range []string{"1ns", "1s", "59s", "59.9s", "0.5m"} {
		_, err := ParseWindow(s)
		require.ErrorContains(t, err, "shorter than a minute", s)
	}
}

// Was a bug: an upstream's or a fallback's headers could set
// Accept-Encoding. net/http's transport then left the answers compressed
// as the upstream sent them: the budgets read no usage in them and charged
// each answer its whole reservation (29 times the usage of a 16-token
// answer), the Breaker checked no stream's end, and where the proxy masks
// keys every answer was refused as encoded unasked.
func TestAConfigsHeadersMayNotSetAcceptEncoding(t *testing.T) {
	for _, name := range []string{"Accept-Encoding", "accept-encoding"} {
		for _, headers := range []string{"    headers:\n      " + name + ": gzip\n", // an upstream's, and a fallback's
			"    fallbacks:\n      - {base_url: http://y/v1, key_env: K, headers: {" + name + ": gzip}}\n"} {
			_, err := ParseFile(strings.NewReader("upstreams:\n  - prefix: /v1\n    url: http://x/v1\n"+headers), "p.yaml")
			require.Error(t, err, headers)
			assert.Contains(t, err.Error(), "p.yaml:5: headers may not set "+name+": ", headers)
		}
	}
}
