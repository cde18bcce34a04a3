package main

import (
	"errors"
	"flag"
	"fmt"
	"strconv"
	"time"
)

// valueFlag is a flag.Value whose error says what the flag takes, where the
// flag package's own number and duration flags say only "parse error". It
// reads what they read.
type valueFlag[T any] struct {
	p     *T
	parse func(string) (T, error)
	want  string
}

func (f valueFlag[T]) Set(s string) error {
	v, err := f.parse(s)
	if errors.Is(err, strconv.ErrRange) {
		return errors.New("value out of range")
	}
	if err != nil {
		return errors.New(f.want)
	}
	*f.p = v
	return nil
}

func (f valueFlag[T]) String() string {
	if f.p == nil {
		return ""
	}
	return fmt.Sprint(*f.p)
}

const wantWhole = "want a whole number, such as 10"

func intVar(fs *flag.FlagSet, p *int, name string, def int) {
	*p = def
	fs.Var(valueFlag[int]{p, func(s string) (int, error) {
		v, err := strconv.ParseInt(s, 0, strconv.IntSize)
		return int(v), err
	}, wantWhole}, name, "")
}

func int64Var(fs *flag.FlagSet, p *int64, name string, def int64) {
	*p = def
	fs.Var(valueFlag[int64]{p, func(s string) (int64, error) { return strconv.ParseInt(s, 0, 64) }, wantWhole}, name, "")
}

func uint64Var(fs *flag.FlagSet, p *uint64, name string, def uint64) {
	*p = def
	fs.Var(valueFlag[uint64]{p, func(s string) (uint64, error) { return strconv.ParseUint(s, 0, 64) }, wantWhole}, name, "")
}

func float64Var(fs *flag.FlagSet, p *float64, name string, def float64) {
	*p = def
	fs.Var(valueFlag[float64]{p, func(s string) (float64, error) { return strconv.ParseFloat(s, 64) },
		"want a number, such as 10 or 0.5"}, name, "")
}

func durationVar(fs *flag.FlagSet, p *time.Duration, name string, def time.Duration) {
	*p = def
	fs.Var(valueFlag[time.Duration]{p, time.ParseDuration, "want a Go duration, such as 500ms, 1s or 2m"}, name, "")
}
