package httpguard

import (
	"fmt"
	"math"
	"math/bits"
	"strconv"
	"strings"
)

// Money is an amount of US dollars counted in nano-dollars (1e-9 $), so that
// sums are exact: ten charges of $0.10 make exactly $1, and a price of
// $0.028 per million tokens is a whole number (28,000,000 nano-dollars per
// million tokens). An int64 holds about ±$9.2 billion. The zero value is $0.
type Money int64

// Units of Money: 3 * Cent is $0.03, 28 * Cent / 10 is $0.028.
const (
	Nanodollar  Money = 1
	Microdollar Money = 1_000
	Cent        Money = 10_000_000
	Dollar      Money = 1_000_000_000
)

// maxMoney is the largest Money; cost arithmetic saturates there.
const maxMoney = Money(math.MaxInt64)

// Dollars returns d dollars as Money, rounded to the nearest nano-dollar.
// NaN is $0; values beyond Money's range saturate. Prefer ParseMoney for
// amounts written in decimal, which is exact.
func Dollars(d float64) Money {
	switch n := math.Round(d * 1e9); {
	case math.IsNaN(n):
		return 0
	case n >= math.MaxInt64:
		return maxMoney
	case n <= math.MinInt64:
		return Money(math.MinInt64)
	default:
		return Money(n)
	}
}

// ParseMoney reads a decimal amount of dollars such as "0.028", "2", "-1.5"
// or "$3.75" exactly, without going through float64. Digits beyond the ninth
// decimal are rounded half away from zero. Exponents ("1e-3") are accepted.
// It returns an error for anything else and for amounts beyond Money's
// range (about ±$9.2 billion).
func ParseMoney(s string) (Money, error) {
	orig := s
	s = strings.TrimSpace(s)
	neg := false
	if strings.HasPrefix(s, "-") {
		neg, s = true, s[1:]
	}
	s = strings.TrimPrefix(s, "$")
	exp := 0
	if i := strings.IndexAny(s, "eE"); i >= 0 {
		e, err := strconv.Atoi(s[i+1:])
		if err != nil || e < -30 || e > 30 {
			return 0, fmt.Errorf("httpguard: invalid amount %q", orig)
		}
		s, exp = s[:i], e
	}
	whole, frac, _ := strings.Cut(s, ".")
	if whole == "" && frac == "" || !allDigits(whole) || !allDigits(frac) {
		return 0, fmt.Errorf("httpguard: invalid amount %q", orig)
	}
	// digits * 10^(exp - len(frac)) dollars = digits * 10^(9 + exp - len(frac)) nano-dollars.
	digits := strings.TrimLeft(whole+frac, "0")
	shift := 9 + exp - len(frac)
	round := false
	if shift < 0 {
		// The last -shift digits are below a nano-dollar: round on the first.
		k := len(digits) + shift
		if k < 0 {
			k = 0
		}
		round = k < len(digits) && len(digits)-k == -shift && digits[k] >= '5'
		digits, shift = digits[:k], 0
	}
	var n uint64
	for i := 0; i < len(digits); i++ {
		hi, lo := bits.Mul64(n, 10)
		lo, carry := bits.Add64(lo, uint64(digits[i]-'0'), 0)
		if hi != 0 || carry != 0 || lo > math.MaxInt64 {
			return 0, fmt.Errorf("httpguard: amount %q is out of range", orig)
		}
		n = lo
	}
	if round {
		if n == math.MaxInt64 {
			return 0, fmt.Errorf("httpguard: amount %q is out of range", orig)
		}
		n++
	}
	for ; shift > 0 && n != 0; shift-- {
		hi, lo := bits.Mul64(n, 10)
		if hi != 0 || lo > math.MaxInt64 {
			return 0, fmt.Errorf("httpguard: amount %q is out of range", orig)
		}
		n = lo
	}
	if neg {
		return -Money(n), nil
	}
	return Money(n), nil
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// String formats m in dollars with as many decimals as it needs, at least
// two: "$1.00", "$0.0012", "$1.234567891", "-$0.50".
func (m Money) String() string {
	var buf [32]byte
	b := buf[:0]
	u := uint64(m)
	if m < 0 {
		b = append(b, '-')
		u = -u
	}
	b = append(b, '$')
	b = strconv.AppendUint(b, u/1e9, 10)
	frac := strconv.AppendUint(nil, u%1e9+1e9, 10)[1:] // nine digits, leading zeros kept
	frac = []byte(strings.TrimRight(string(frac), "0"))
	for len(frac) < 2 {
		frac = append(frac, '0')
	}
	b = append(b, '.')
	b = append(b, frac...)
	return string(b)
}

// costSum accumulates tokens × price-per-million products exactly in 128
// bits, and converts to Money once, so that rounding happens a single time
// per request.
type costSum struct {
	hi, lo   uint64
	overflow bool
}

// add adds tokens × pricePerMillion. Both must be non-negative (validated
// upstream: tokens are clamped to maxUsageTokens, prices are checked).
func (c *costSum) add(tokens int64, pricePerMillion Money) {
	if tokens <= 0 || pricePerMillion <= 0 {
		return
	}
	hi, lo := bits.Mul64(uint64(tokens), uint64(pricePerMillion))
	var carry uint64
	c.lo, carry = bits.Add64(c.lo, lo, 0)
	c.hi, carry = bits.Add64(c.hi, hi, carry)
	if carry != 0 {
		c.overflow = true
	}
}

// money divides the sum by one million, rounding up when up is true and to
// the nearest (half up) otherwise. It saturates at maxMoney.
func (c *costSum) money(up bool) Money {
	if c.overflow || c.hi >= 1e6 { // the quotient would not fit in 64 bits
		return maxMoney
	}
	q, r := bits.Div64(c.hi, c.lo, 1e6)
	if (up && r > 0) || (!up && r >= 500_000) {
		q++
	}
	if q > math.MaxInt64 {
		return maxMoney
	}
	return Money(q)
}
