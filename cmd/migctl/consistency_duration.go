package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// dayDuration is a time.Duration flag that also takes days ("14d",
// "1d12h"), since the runbook speaks of a two-week watch.
type dayDuration struct{ d *time.Duration }

func (v dayDuration) String() string {
	if v.d == nil || *v.d == 0 {
		return "0"
	}
	if *v.d%(24*time.Hour) == 0 {
		return strconv.FormatInt(int64(*v.d/(24*time.Hour)), 10) + "d"
	}
	return v.d.String()
}

func (v dayDuration) Set(s string) error {
	d, err := parseDayDuration(s)
	if err != nil {
		return err
	}
	*v.d = d
	return nil
}

func (v dayDuration) Type() string { return "duration" }

// parseDayDuration accepts time.ParseDuration's syntax with an optional
// leading whole number of days: "14d", "2d12h", "90m".
func parseDayDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	var days int64
	if i := strings.IndexByte(s, 'd'); i > 0 {
		n, err := strconv.ParseInt(s[:i], 10, 64)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("bad duration %q (want e.g. 14d, 36h, 90m)", s)
		}
		days, s = n, s[i+1:]
	}
	var rest time.Duration
	if s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			return 0, fmt.Errorf("bad duration %q (want e.g. 14d, 36h, 90m)", s)
		}
		rest = d
	}
	return time.Duration(days)*24*time.Hour + rest, nil
}
