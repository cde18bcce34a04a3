package httpguard

import (
	"bytes"
	"testing"
	"unicode/utf16"

	"github.com/stretchr/testify/assert"
)

// utf16File is s as Windows PowerShell 5's redirection (echo ... >
// prices.json, the README's command) and Out-File write it by default:
// UTF-16, with its byte order mark, little-endian or big-endian.
func utf16File(s string, bigEndian bool) []byte {
	var b bytes.Buffer
	for _, u := range utf16.Encode([]rune("\uFEFF" + s)) {
		if bigEndian {
			b.Write([]byte{byte(u >> 8), byte(u)})
		} else {
			b.Write([]byte{byte(u), byte(u >> 8)})
		}
	}
	return b.Bytes()
}

// Was a stumble: the README's echo '{...}' > prices.json, run in Windows
// PowerShell 5, writes the table in UTF-16, and LoadPrices refused it with
// "line 1, column 1: invalid character 'ÿ' looking for beginning of
// value", which says neither what is wrong nor what to do; the byte order
// mark skipped since 9cec4ee is UTF-8's only. The error now names the
// encoding and how to write the file in UTF-8.
func TestLoadPricesNamesAUTF16File(t *testing.T) {
	for _, bigEndian := range []bool{false, true} {
		_, err := LoadPrices(bytes.NewReader(utf16File(`{"m": {"input": 0.28, "output": 0.42}}`, bigEndian)))
		assert.EqualError(t, err, "httpguard: prices: the file is UTF-16 (as Windows PowerShell 5 writes with > or Out-File): "+
			"write it as UTF-8 (Out-File -Encoding utf8, or Set-Content)", "big-endian %v", bigEndian)
	}
}
