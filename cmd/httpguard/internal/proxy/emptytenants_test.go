package proxy

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Was a stumble: an empty tenants list (tenants: [], or a template that
// rendered none) was taken as no tenants at all, which turns virtual keys
// off: each client's own key passes through to the upstream, and the
// key_env lines are no longer read. An empty models list is refused for
// the same reason ("say which is meant"); tenants now too.
func TestAnEmptyTenantsListIsRefused(t *testing.T) {
	for _, file := range []string{"tenants: []\n", "tenants: [\n]\n"} {
		_, err := ParseFile(strings.NewReader("upstreams:\n  - prefix: /v1\n    url: https://api.holysheep.ai/v1\n    key_env: HOLYSHEEP_API_KEY\n"+file), "proxy.yaml")
		require.Error(t, err, file)
		assert.Contains(t, err.Error(), "proxy.yaml:5: tenants is empty", file)
	}
}
