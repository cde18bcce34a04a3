package httpguard

import (
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"
)

// A credential's member named in camelCase or with hyphens, as JavaScript
// SDKs and gateways' typed clients write them (accessToken, azureAdToken,
// awsAccessKeyId, awsSessionToken, x-api-key), was not taken for one: the
// names were matched on their snake_case spellings (api_key, access_key,
// *_token), so that such a body went to the next target, another
// provider's host, key and all. A name is matched in any case, whatever
// separates its words.
func TestFallbackSendsABodyHoldingCamelCaseCredentialsToNoOtherTarget(t *testing.T) {
	for _, member := range []string{
		`"accessToken":"primary"`,
		`"azureAdToken":"primary"`,
		`"AzureADToken":"primary"`,
		`"awsAccessKeyId":"AKIA-primary"`,
		`"accessKeyId":"AKIA-primary"`,
		`"awsSessionToken":"primary"`,
		`"authToken":"primary"`,
		`"token":"primary"`,
		`"x-api-key":"sk-primary"`,
		`"api-key":"sk-primary"`,
		`"access-token":"primary"`,
		`"userConfig":{"model_list":[]}`,
		`"privateKey":"-----BEGIN"`,
		`"private_key":"-----BEGIN"`,
		// matched before too: they stay so
		`"apiKey":"sk-primary"`,
		`"clientSecret":"primary"`,
		`"awsSecretAccessKey":"primary"`,
		`"azure_ad_token":"primary"`,
	} {
		r := newMapRig(t)
		body := `{"model":"m","messages":[],` + member + `}`

		resp := sendToPrimary(t, r.client, r, body)

		assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode, member)
		assert.Equal(t, "primary", resp.Header.Get(TargetHeader), member)
		assert.Empty(t, r.second.received(), member)
		assert.Empty(t, r.third.received(), member)
	}
	for _, field := range []string{"accessToken", "x-api-key", "awsSessionToken"} {
		body, ct := multipartBody(t, "ID3 audio", [2]string{"model", "whisper-1"}, [2]string{field, "primary"})
		r := newMapRig(t)
		assert.Equal(t, "primary", r.postForm(t, nil, body, ct), "multipart "+field)
		r = newMapRig(t)
		assert.Equal(t, "primary", r.postForm(t, nil, []byte("model=whisper-1&"+field+"=primary"), "application/x-www-form-urlencoded"), "urlencoded "+field)
	}
}

// Names that only look like a credential's, in any spelling, go along: the
// counts of tokens (max_tokens, maxTokens, max_completion_tokens,
// budget_tokens, tokens), token ids (stop_token_ids, logit_bias), a
// prompt_cache_key, and the members every chat body has.
func TestFallbackSendsABodyWhoseNamesOnlyLookLikeCredentialsToTheNextTarget(t *testing.T) {
	for _, body := range []string{
		`{"model":"m","messages":[{"role":"user","content":"hi"}],"tools":[],"tool_choice":"auto","max_tokens":5}`,
		`{"model":"m","messages":[],"max_completion_tokens":5,"maxTokens":5,"max_output_tokens":5,"budget_tokens":5}`,
		`{"model":"m","messages":[],"tokens":[1,2],"stop_token_ids":[2],"skip_special_tokens":true,"logit_bias":{"50256":-100}}`,
		`{"model":"m","messages":[],"prompt_cache_key":"k","promptCacheKey":"k","keep_alive":"5m","metadata":{"api_key":"nested"}}`,
	} {
		r := newMapRig(t)

		resp := sendToPrimary(t, r.client, r, body)

		assert.Equal(t, "second", resp.Header.Get(TargetHeader), body)
		assert.Equal(t, []string{body}, r.second.received(), body)
	}
}

func TestIsBodyCredential(t *testing.T) {
	for name, want := range map[string]bool{
		"api_key": true, "apiKey": true, "API-KEY": true, "openai_api_key": true, "zen_api_key": true,
		"accessToken": true, "azureAdToken": true, "id_token": true, "token": true, "Token": true,
		"awsAccessKeyId": true, "aws_access_key_id": true, "secretKey": true, "client_secret": true,
		"user_config": true, "userConfig": true, "vertexCredentials": true, "azure_password": true,

		"tokens": false, "max_tokens": false, "maxTokens": false, "max_completion_tokens": false,
		"token_count": false, "stop_token_ids": false, "prompt_cache_key": false, "key": false,
		"messages": false, "tools": false, "model": false, "keep_alive": false, "": false,
	} {
		assert.Equal(t, want, isBodyCredential(name), name)
	}
}
