package proxy

import (
	"net/http"
	"testing"

	"github.com/holysheep/httpguard/httpguardtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Was a bug: with tenants, the proxy dropped a client's Authorization,
// X-Api-Key and Api-Key but passed its X-Goog-Api-Key, in which Gemini's
// SDKs send a key and which the config forbids an upstream's headers to
// set. A client that sends its virtual key in both (or another key) had it
// reach the upstream beside the real key: Gemini answers 400 to two
// credentials, and a gateway that reads it first (Bifrost's key bypass)
// runs the request on it.
func TestATenantsGoogleKeyDoesNotReachTheUpstream(t *testing.T) {
	srv := faultServer(t, httpguardtest.Config{})
	r := start(t, tenantsConfig(t, srv))
	resp, out := r.post(t, "/v1/chat/completions", chatBody, "Authorization", "Bearer vk-chat", "X-Goog-Api-Key", "vk-chat")
	require.Equal(t, http.StatusOK, resp.StatusCode, string(out))
	reqs := srv.Requests()
	require.Len(t, reqs, 1)
	assert.Empty(t, reqs[0].Header.Values("X-Goog-Api-Key"))
	assert.Equal(t, "Bearer sk-real-openai", reqs[0].Header.Get("Authorization"))
}
