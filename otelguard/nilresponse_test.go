package otelguard

import (
	"net/http"
	"testing"

	"github.com/holysheep/httpguard"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// A transport that breaks the RoundTripper contract by returning neither a
// response nor an error is an error to every layer of httpguard, never a
// panic; the metrics' Layers, which sit right above it, keep that promise.
func TestLayersTurnATransportsNilResponseIntoAnError(t *testing.T) {
	m, reader := newMetrics(t)
	broken := roundTripFunc(func(*http.Request) (*http.Response, error) { return nil, nil })
	for name, layer := range map[string]httpguard.Layer{"Requests": m.Requests(), "Attempts": m.Attempts()} {
		req, err := http.NewRequest(http.MethodGet, "http://127.0.0.1:1/v1/models", nil)
		require.NoError(t, err)
		var resp *http.Response
		require.NotPanics(t, func() { resp, err = httpguard.Chain(broken, layer).RoundTrip(req) }, name)
		assert.Nil(t, resp, name)
		assert.ErrorContains(t, err, "neither a response nor an error", name)
	}
	data := (&rig{reader: reader}).collect(t)
	assert.Equal(t, int64(1), sum(t, data["httpguard.requests"], keyOutcome.String("error"), keyError.String("connection")))
	assert.Equal(t, int64(1), sum(t, data["httpguard.attempts"], keyError.String("connection")))
}
