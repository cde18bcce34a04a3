package httpguard

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// lenientSpellings are spellings of path that lenient servers route as
// path: with a trailing slash or a dot segment (Express, and gateways
// that resolve dot segments), in another case (Express, ASP.NET), with a
// ;parameter (Java's servers), with a slash escaped (servers that route
// on the decoded path, such as Starlette, which LiteLLM's proxy runs on),
// or written with backslashes (IIS).
func lenientSpellings(path string) []string {
	last := strings.LastIndexByte(path, '/')
	return []string{path + "/", path + "/.", path + "/x/..", strings.ToUpper(path), path + ";v=1",
		path[:last] + "%2F" + path[last+1:], path[:last] + "%2f" + path[last+1:], "/" + strings.ReplaceAll(path[1:], "/", `\`)}
}

// Was a bug: the Budget priced the output of speech at the audio price
// only on a path ending exactly with /audio/speech as sent: on another
// spelling of it, which lenient servers route there, a speech billed
// $0.049 was charged $0.00005, its text input alone (speech answers with
// the audio alone: the reservation is its charge). The output is now
// priced so on every spelling servers may route there, as the Images
// API's is; a free endpoint is still free only as spelled exactly.
func TestBudgetPricesSpeechAndImagesOnEverySpellingOfTheirPath(t *testing.T) {
	p := Price{Input: 60 * Cent, Output: 0, AudioOutput: 12 * Dollar}
	body := `{"model":"gpt-4o-mini-tts","voice":"alloy","input":"Hello there, how are you today?"}`
	charged := func(path string) Money {
		var c Money
		b := newTestBudget(t, BudgetConfig{Limit: 10 * Dollar, Prices: PriceTable{"gpt-4o-mini-tts": p}, OnSettle: func(s Settlement) { c = s.Charged }})
		api := newFakeAPI(t, func(w http.ResponseWriter, _ *http.Request, _ []byte) {
			w.Header().Set("Content-Type", "audio/mpeg")
			io.WriteString(w, "ID3 mp3 frames")
		})
		req, err := http.NewRequest(http.MethodPost, api.srv.URL+path, strings.NewReader(body))
		require.NoError(t, err)
		resp, err := api.client(t, b).Do(req)
		require.NoError(t, err, path)
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return c
	}
	want := charged("/v1/audio/speech")
	require.Greater(t, want, 10*Cent/100, "at the audio price")
	for _, path := range lenientSpellings("/v1/audio/speech") {
		assert.Equal(t, want, charged(path), path)
	}

	for _, path := range lenientSpellings("/v1/messages/count_tokens") {
		req, err := http.NewRequest(http.MethodPost, "http://api.test"+path, nil)
		require.NoError(t, err)
		assert.False(t, FreeEndpoint(req), "%s: free only as spelled exactly", path)
	}
}

// Was a bug: the Budget read the Azure deployment or LiteLLM engine that
// runs a request (/openai/deployments/{name}/..., /engines/{name}/...)
// only in the path as sent, so /openai/deployments%2Fdear/chat/completions
// named none, and the request was priced at its body's model, while
// servers that route on the decoded path (Starlette, which LiteLLM's
// proxy runs on) ran it on the deployment: a hundred times the price
// here. The decoded path's deployment is read too; when the two forms
// name different ones, the request is refused, as servers would run
// either.
func TestBudgetReadsTheDeploymentAnEscapedPathNames(t *testing.T) {
	prices := PriceTable{"cheap": {Input: Dollar, Output: Dollar}, "dear": {Input: 100 * Dollar, Output: 100 * Dollar}, FallbackModel: {Input: Dollar, Output: Dollar}}
	body := `{"model":"cheap","max_tokens":100,"messages":[{"role":"user","content":"hi"}]}`
	reserved := func(path string) (Money, error) {
		var r Money
		b := newTestBudget(t, BudgetConfig{Limit: 1000 * Dollar, Prices: prices, OnSettle: func(s Settlement) { r = s.Reserved }})
		api := newFakeAPI(t, answerBound)
		resp, err := api.client(t, b).Post(api.srv.URL+path, "application/json", strings.NewReader(body))
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return r, nil
	}
	want, err := reserved("/openai/deployments/dear/chat/completions")
	require.NoError(t, err)
	for _, path := range []string{"/openai/deployments%2Fdear/chat/completions", "/openai%2Fdeployments%2Fdear%2Fchat%2Fcompletions",
		"/openai/deployments%2fdear/chat/completions", "/v1/engines%2Fdear/chat/completions"} {
		got, err := reserved(path)
		require.NoError(t, err, path)
		assert.Equal(t, want, got, path)
	}
	for _, path := range []string{"/openai/deployments/%64ear/chat/completions", "/openai/deployments/dear%2Fx/chat/completions"} {
		_, err := reserved(path)
		require.ErrorIs(t, err, ErrUnknownModel, "%s: the forms name different deployments", path)
	}
}
