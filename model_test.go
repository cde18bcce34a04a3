package httpguard

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestWithModelRewritesOnlyTheModelsValue(t *testing.T) {
	for name, tc := range map[string]struct{ in, want string }{
		"first":       {`{"model":"deepseek-v3.2","messages":[]}`, `{"model":"gpt-4.1-mini","messages":[]}`},
		"spaced":      {"{ \"messages\" : [{\"model\":\"inner\"}] ,\n\t\"model\" :  \"deepseek-v3.2\"  }", "{ \"messages\" : [{\"model\":\"inner\"}] ,\n\t\"model\" :  \"gpt-4.1-mini\"  }"},
		"escaped key": {`{"\u006dodel":"deepseek\u002dv3.2","n":1}`, `{"\u006dodel":"gpt-4.1-mini","n":1}`},
		"repeated":    {`{"model":"a","x":1,"model":"deepseek-v3.2"}`, `{"model":"gpt-4.1-mini","x":1,"model":"gpt-4.1-mini"}`},
		"other case":  {`{"Model":"a","model":"b"}`, `{"Model":"a","model":"gpt-4.1-mini"}`},
		"none":        {`{"messages":[]}`, `{"messages":[]}`},
	} {
		t.Run(name, func(t *testing.T) {
			got, err := withModel([]byte(tc.in), quoteJSON("gpt-4.1-mini"))
			require.NoError(t, err)
			assert.Equal(t, tc.want, string(got))
		})
	}
	_, err := withModel([]byte(`{"model":"a"`), quoteJSON("b"))
	assert.ErrorIs(t, err, errJSONSyntax)
	_, err = withModel([]byte(`["model"]`), quoteJSON("b"))
	assert.ErrorIs(t, err, errJSONSyntax)
}

func TestLastModelReadsTheModelDecodersRead(t *testing.T) {
	for in, want := range map[string]string{
		`{"model":"a"}`:                  "a",
		`{"model":"a","model":"b"}`:      "b",
		`{"model":"x\u002dy"}`:           "x-y",
		`{"m":{"model":"inner"}}`:        "",
		`{"model":null}`:                 "",
		`{"model":3}`:                    "",
		`{"model":"a"} trailing garbage`: "",
	} {
		raw, escaped := lastModel([]byte(in))
		got := string(raw)
		if escaped {
			got = string(appendUnquoted(nil, raw))
		}
		assert.Equal(t, want, got, in)
	}
}

// FuzzWithModel checks, for any body, that withModel changes the model
// and nothing else, as encoding/json reads the body.
func FuzzWithModel(f *testing.F) {
	for _, s := range []string{`{"model":"a","messages":[{"role":"user","content":"hi"}]}`, `{"\u006dodel":"x","model":"y"}`,
		`{"MODEL":"a"}`, `{}`, `{"model":{"nested":"model"}}`, `[1]`, `{"a":"\"model\":"}`} {
		f.Add([]byte(s), "gpt-4.1-mini")
	}
	f.Fuzz(func(t *testing.T, body []byte, model string) {
		out, err := withModel(body, quoteJSON(model))
		if !json.Valid(body) {
			return
		}
		var before, after map[string]json.RawMessage
		if json.Unmarshal(body, &before) != nil {
			require.Error(t, err, "not an object")
			return
		}
		require.NoError(t, err)
		require.NoError(t, json.Unmarshal(out, &after), "%s", out)
		if _, ok := before["model"]; ok {
			var got string
			require.NoError(t, json.Unmarshal(after["model"], &got))
			require.Equal(t, string([]rune(model)), got)
		}
		delete(before, "model")
		delete(after, "model")
		require.Equal(t, len(before), len(after))
		for k, v := range before {
			require.JSONEq(t, string(v), string(after[k]), "member %q", k)
		}
	})
}
