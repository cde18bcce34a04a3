package httpguard

import (
	"bytes"
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The README's overhead line: on the primary's path, with the primary
// answering, the Fallback adds the two allocations of the TargetHeader
// value and nothing else.
func TestFallbackOnThePrimarysPathAddsOnlyItsTargetHeader(t *testing.T) {
	f, err := NewFallback(FallbackConfig{Targets: []Target{{BaseURL: "http://api.test/v1"}, {BaseURL: "http://other.test/v1"}}})
	require.NoError(t, err)
	allocs := func(rt http.RoundTripper) float64 {
		return testing.AllocsPerRun(50, func() {
			req, _ := http.NewRequest("POST", "http://api.test/v1/chat/completions", bytes.NewReader(benchBody))
			resp, err := rt.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
		})
	}
	fallback := f.Wrap(memTransport{})
	assert.Equal(t, 2.0, allocs(fallback)-allocs(memTransport{}))
}
