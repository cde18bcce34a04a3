package httpguard

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestMapModelRewritesOnlyTheModelsValue(t *testing.T) {
	models := map[string][]byte{"deepseek-v3.2": quoteJSON("gpt-4.1-mini")}
	for name, tc := range map[string]struct{ in, want string }{
		"first":         {`{"model":"deepseek-v3.2","messages":[]}`, `{"model":"gpt-4.1-mini","messages":[]}`},
		"spaced":        {"{ \"messages\" : [{\"model\":\"inner\"}] ,\n\t\"model\" :  \"deepseek-v3.2\"  }", "{ \"messages\" : [{\"model\":\"inner\"}] ,\n\t\"model\" :  \"gpt-4.1-mini\"  }"},
		"escaped key":   {`{"\u006dodel":"deepseek\u002dv3.2","n":1}`, `{"\u006dodel":"gpt-4.1-mini","n":1}`},
		"repeated":      {`{"model":"deepseek-v3.2","x":1,"model":"deepseek-v3.2"}`, `{"model":"gpt-4.1-mini","x":1,"model":"gpt-4.1-mini"}`},
		"other case":    {`{"Model":"deepseek-v3.2","n":1}`, `{"Model":"gpt-4.1-mini","n":1}`},
		"not mapped":    {`{"model":"a","model":"a"}`, `{"model":"a","model":"a"}`},
		"not a string":  {`{"model":3}`, `{"model":3}`},
		"none":          {`{"messages":[]}`, `{"messages":[]}`},
		"not an object": {`["model"]`, `["model"]`},
		"cut":           {`{"model":"deepseek-v3.2"`, `{"model":"deepseek-v3.2"`},
		"identity":      {`{"model":"deepseek-v3.2"}`, `{"model":"gpt-4.1-mini"}`},
	} {
		t.Run(name, func(t *testing.T) {
			encoding := ""
			if name == "identity" {
				encoding = "identity"
			}
			got, err := mapModel([]byte(tc.in), encoding, models)
			require.NoError(t, err)
			assert.Equal(t, tc.want, string(got))
		})
	}
	for _, in := range []string{`{"model":"a","model":"deepseek-v3.2"}`, `{"Model":"a","model":"deepseek-v3.2"}`, `{"model":null,"model":"deepseek-v3.2"}`} {
		_, err := mapModel([]byte(in), "", models)
		assert.ErrorIs(t, err, ErrModelUnreadable, in)
	}
	_, err := mapModel([]byte(`{"model":"deepseek-v3.2"}`), "gzip", models)
	assert.ErrorIs(t, err, ErrModelUnreadable)
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

// FuzzMapModel checks, for any body, that mapModel changes the model
// and nothing else, as encoding/json reads the body.
func FuzzMapModel(f *testing.F) {
	for _, s := range []string{`{"model":"a","messages":[{"role":"user","content":"hi"}]}`, `{"\u006dodel":"a","model":"a"}`,
		`{"MODEL":"a"}`, `{}`, `{"model":{"nested":"model"}}`, `[1]`, `{"a":"\"model\":"}`} {
		f.Add([]byte(s), "gpt-4.1-mini")
	}
	f.Fuzz(func(t *testing.T, body []byte, model string) {
		out, err := mapModel(body, "", map[string][]byte{"a": quoteJSON(model)})
		if errors.Is(err, ErrModelUnreadable) {
			return
		}
		require.NoError(t, err)
		var before, after map[string]json.RawMessage
		if !json.Valid(body) || json.Unmarshal(body, &before) != nil {
			return
		}
		require.NoError(t, json.Unmarshal(out, &after), "%s", out)
		var was, is struct{ Model string }
		if json.Unmarshal(body, &was) == nil && was.Model == "a" {
			require.NoError(t, json.Unmarshal(out, &is))
			require.Equal(t, string([]rune(model)), is.Model)
		}
		require.Equal(t, len(before), len(after))
		for k, v := range before {
			if strings.EqualFold(k, "model") {
				continue
			}
			require.JSONEq(t, string(v), string(after[k]), "member %q", k)
		}
	})
}
