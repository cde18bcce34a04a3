package proxy

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Was a stumble: prices take "*" for every model, and a tenant's models or
// a fallback's models written the same way (models: ["*"], {"*":
// gpt-4.1-mini}, ["claude-*"]) were taken as model names, which no request
// names: the tenant was refused every model (403 model_not_allowed), the
// fallback asked for every model unchanged, the proxy having started
// without a word. A * in those lists is now an error naming its line.
func TestAStarInTheConfigFilesModelListsIsRefused(t *testing.T) {
	const tenant = "tenants:\n  - name: a\n    key_sha256: 5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8\n"
	for _, tc := range []struct{ file, want string }{
		{tenant + "    models: [\"*\"]\n", "proxy.yaml:4: models lists model names, not patterns"},
		{tenant + "    models: [deepseek-v3.2, claude-*]\n", "proxy.yaml:4: models lists model names, not patterns"},
		{"upstreams:\n  - prefix: /v1\n    url: https://api.holysheep.ai/v1\n    fallbacks:\n      - base_url: https://api.openai.com/v1\n" +
			"        key_env: OPENAI_KEY\n        models: {\"*\": gpt-4.1-mini}\n", "proxy.yaml:7: models maps model names, not patterns"},
	} {
		_, err := ParseFile(strings.NewReader(tc.file), "proxy.yaml")
		require.Error(t, err, tc.file)
		assert.Contains(t, err.Error(), tc.want, tc.file)
	}
}
