package httpguard

import (
	"strings"
	"testing"
	"testing/iotest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Was a bug: a member whose name ends in token but whose value is a flag
// or a number was taken for a credential, and its body went to no target
// but the primary. Servers' own parameters are named so: llama.cpp's web
// chat sends "timings_per_token": true on every request, SillyTavern
// "ban_eos_token" (text-generation-webui, TabbyAPI, Aphrodite, llama.cpp)
// and "add_bos_token", LiteLLM takes "input_cost_per_token" and
// "output_cost_per_token". A credential is a string, an object or an
// array: true, false and numbers, like null and "", hold none.
func TestFallbackSendsABodyWhoseCredentialNamedMembersHoldFlagsOrNumbersToTheNextTarget(t *testing.T) {
	for _, body := range []string{
		`{"model":"m","messages":[],"stream":false,"timings_per_token":true,"cache_prompt":true}`,
		`{"model":"m","prompt":"hi","ban_eos_token":false,"add_bos_token":true,"skip_special_tokens":true}`,
		`{"model":"m","messages":[],"input_cost_per_token":0.000001,"output_cost_per_token":2e-6}`,
		`{"model":"m","messages":[],"api_key":false,"secret":-1}`,
	} {
		r := newMapRig(t)

		resp := sendToPrimary(t, r.client, r, body)

		assert.Equal(t, "second", resp.Header.Get(TargetHeader), body)
		assert.Equal(t, []string{body}, r.second.received(), body)
	}
}

// Read a byte at a time, a flag or a number spans chunks: it is no
// credential, and a string, an object or an array still is one.
func TestReadHoldsCredentialsOfFlagsAndNumbersAcrossChunks(t *testing.T) {
	for body, want := range map[string]bool{
		`{"timings_per_token":true}`:                   false,
		`{"ban_eos_token" : false ,"model":"m"}`:       false,
		`{"input_cost_per_token":1.5e-7}`:              false,
		`{"api_key":-12345678901234567890}`:            false,
		`{"api_key":"true"}`:                           true,
		`{"api_key":["sk"]}`:                           true,
		`{"ban_eos_token":false,"api_key":"sk"}`:       true,
		`{"api_key":tru`:                               true, // cut short: its bytes go along
		`{"model":"m","access_token":` + "\n" + `"t"}`: true,
	} {
		got, err := readHoldsCredentials(iotest.OneByteReader(strings.NewReader(body)))
		require.NoError(t, err)
		assert.Equal(t, want, got, "a byte at a time: %s", body)
		assert.Equal(t, want, holdsCredentials([]byte(body)), body)
	}
}
