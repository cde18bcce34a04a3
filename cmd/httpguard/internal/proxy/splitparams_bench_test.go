package proxy

import (
	"strings"
	"testing"
)

func BenchmarkSplitParamsQuotedSemicolons(b *testing.B) {
	h := `form-data; name="` + strings.Repeat(";", 64<<10) + `"`
	for b.Loop() {
		splitParams(h)
	}
}
