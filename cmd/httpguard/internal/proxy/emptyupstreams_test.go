package proxy

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Was a stumble: an empty upstreams list (upstreams: [], a template that
// rendered none) was taken as no upstreams at all, and the proxy sent
// every request to --upstream, https://api.holysheep.ai/v1 by default:
// the clients' own keys, meant for the provider the file was to name, went
// to another. An empty list is now an error, as an empty tenants or models
// list is.
func TestAnEmptyUpstreamsListIsRefused(t *testing.T) {
	_, err := ParseFile(strings.NewReader("upstreams: []\n"), "proxy.yaml")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "proxy.yaml:1: upstreams is empty")
}
