package httpguard

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestURLEncodedFieldsReadsTheModelAsPythonDoes(t *testing.T) {
	for in, want := range map[string]string{
		"model=a":             "a",
		"x=1;model=a":         "a",
		"model=a+b&x":         "a b",
		"%6Dodel=%61":         "a",
		"mod%zzel=b&model=a":  "a",
		"model&model":         "",
		"models=b&amodel=b":   "",
		"model=a&model=a;y=2": "a",
	} {
		spans, model, err := formModel([]byte(in), urlencodedForm, "")
		require.NoError(t, err, in)
		assert.Equal(t, want, model, in)
		for _, s := range spans {
			m, _ := url.QueryUnescape(in[s[0]:s[1]])
			assert.Equal(t, want, m, in)
		}
	}
	for _, in := range []string{"model=a&model=b", "model=a;model", "model=%zz", "model=\xe9"} {
		_, _, err := formModel([]byte(in), urlencodedForm, "")
		assert.ErrorIs(t, err, ErrModelUnreadable, in)
	}
}

// multipartReading is what Go's mime/multipart reads of a multipart body:
// each part's header and content, or the error.
func multipartReading(body []byte, boundary string) (headers []http.Header, contents []string, err error) {
	mr := multipart.NewReader(bytes.NewReader(body), boundary)
	for {
		p, err := mr.NextRawPart()
		if err == io.EOF {
			return headers, contents, nil
		}
		if err != nil {
			return nil, nil, err
		}
		c, err := io.ReadAll(p)
		if err != nil {
			return nil, nil, err
		}
		headers, contents = append(headers, http.Header(p.Header)), append(contents, string(c))
	}
}

// FuzzMapFormModel checks, for any form, that mapBodyModel changes the
// model field and nothing else, as Go's mime/multipart and a urlencoded
// form's reader read the body, and maps every model it finds.
func FuzzMapFormModel(f *testing.F) {
	f.Add([]byte("--b\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\na\r\n--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x\"\r\n\r\nID3\r\n--b--\r\n"), "b", false, "big")
	f.Add([]byte("--b\r\n\r\nno header\r\n--b\r\ncontent-disposition: form-data; name=model\r\nContent-Type: text/plain; charset=UTF-8\r\n\r\na\r\n--b--"), "b", false, "x\r\n--b")
	f.Add([]byte("--b\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\n--b\r\n--b--\r\n"), "b", false, "c")
	f.Add([]byte("--b\r\nContent-Disposition: form-data; name=model\r\n\r\na\r\n--b--\r\n\r\nepilogue"), "b", false, "c")
	f.Add([]byte("model=a&x=%20;model=%61"), "", true, "b+c&d")
	f.Add([]byte(`{"model":"a"}`), "", true, "b")
	f.Fuzz(func(t *testing.T, body []byte, boundary string, urlencoded bool, to string) {
		if to == "" || to == "a" {
			return
		}
		ct := "application/x-www-form-urlencoded"
		if !urlencoded {
			if ct = mime.FormatMediaType("multipart/form-data", map[string]string{"boundary": boundary}); ct == "" || boundary == "" {
				return
			}
		}
		out, err := mapBodyModel(body, http.Header{"Content-Type": {ct}}, map[string][]byte{"a": quoteJSON(to)}, map[string]string{"a": to})
		if err != nil {
			require.True(t, errors.Is(err, ErrModelUnreadable), "%v", err)
			return
		}
		if urlencoded {
			checkURLEncodedMapped(t, body, out, to)
			return
		}
		headers, before, err := multipartReading(body, boundary)
		if bytes.Equal(out, body) {
			if err == nil {
				for i, c := range before {
					typ, params, _ := mime.ParseMediaType(headers[i].Get("Content-Disposition"))
					require.False(t, c == "a" && typ == "form-data" && params["name"] == "model" && len(headers[i]) == 1,
						"a model part left unmapped:\n%q", body)
				}
			}
			return
		}
		require.NoError(t, err, "a body mapped that mime/multipart does not read")
		headersOut, after, err := multipartReading(out, boundary)
		require.NoError(t, err)
		require.Equal(t, headers, headersOut)
		require.Equal(t, len(before), len(after))
		for i := range before {
			if before[i] != after[i] {
				require.Equal(t, "a", before[i])
				require.Equal(t, to, after[i])
				_, params, err := mime.ParseMediaType(headers[i].Get("Content-Disposition"))
				require.NoError(t, err)
				require.Equal(t, "model", params["name"])
			}
		}
	})
}

// checkURLEncodedMapped checks that out is the urlencoded body with its
// model fields' values, "a", replaced by to, field for field.
func checkURLEncodedMapped(t *testing.T, body, out []byte, to string) {
	t.Helper()
	split := func(b []byte) (names, values []string) {
		for _, pair := range strings.FieldsFunc(string(b), func(r rune) bool { return r == '&' || r == ';' }) {
			k, v, _ := strings.Cut(pair, "=")
			k, _ = url.QueryUnescape(k)
			v, _ = url.QueryUnescape(v)
			names, values = append(names, k), append(values, v)
		}
		return names, values
	}
	if !bytes.Equal(body, out) && json.Valid(body) {
		return // mapped as JSON (see FuzzMapModel)
	}
	names, before := split(body)
	namesOut, after := split(out)
	require.Equal(t, names, namesOut)
	for i := range before {
		if names[i] == "model" && !bytes.Equal(body, out) {
			require.Equal(t, "a", before[i])
			require.Equal(t, to, after[i])
		} else {
			require.Equal(t, before[i], after[i], "field %q", names[i])
		}
	}
}

func TestSplitMultipartTakesABodyCutOneWayOnly(t *testing.T) {
	const part = "--b\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\na\r\n"
	for in, ok := range map[string]bool{
		part + "--b--":                 true,
		part + "--b--\r\n":             true,
		part + "--b--\r\n\r\n":         true, // form-data-encoder's footer
		part + "--b--x":                false,
		part + "--b-- \r\n":            false,
		part + "--b--\r\n--b--\r\n":    false,
		"\r\n" + part + "--b--":        false,
		part + "--bx\r\n\r\n\r\n--b--": false,
		part:                           false,
	} {
		_, got := splitMultipart([]byte(in), "b")
		assert.Equal(t, ok, got, "%q", in)
	}
}
