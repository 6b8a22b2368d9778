package main

import (
	"testing"
	"time"
)

func TestParseDayDuration(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"14d": 14 * 24 * time.Hour, "1d12h": 36 * time.Hour, "90m": 90 * time.Minute, "0": 0, "2d": 48 * time.Hour,
	} {
		got, err := parseDayDuration(in)
		if err != nil || got != want {
			t.Errorf("parseDayDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"d", "x14d", "14dd", "-1d", "5y"} {
		if _, err := parseDayDuration(bad); err == nil {
			t.Errorf("parseDayDuration(%q) accepted", bad)
		}
	}
}
