package proxy

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Was a stumble: a tenant's key_sha256 made with the key's variable unset
// (printf %s "$KEY" | sha256sum, or echo "$KEY" | sha256sum, gives the
// SHA-256 of nothing, or of a line break) was taken, and the proxy
// started with a tenant no client can be: a request without a key is
// refused before any hash is compared, and a header cannot carry a line
// break. Every request of that tenant's service was answered 401
// invalid_api_key.
func TestATenantKeyHashOfAnEmptyKeyIsRefused(t *testing.T) {
	for _, h := range []string{
		"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", // ""
		"01ba4719c80b6fe911b091a7c05124b64eeece964e09c058ef8f9805daca546b", // "\n"
		"E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
	} {
		_, err := ParseFile(strings.NewReader("tenants:\n  - name: a\n    key_sha256: "+h+"\n"), "proxy.yaml")
		require.Error(t, err, h)
		assert.Contains(t, err.Error(), "proxy.yaml:3: key_sha256 is the SHA-256 of an empty key", h)
	}
	_, err := ParseFile(strings.NewReader("tenants:\n  - name: a\n    key_sha256: 5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8\n"), "proxy.yaml")
	assert.NoError(t, err, "the README's tenant, whose key is password")
}
