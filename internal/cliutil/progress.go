package cliutil

import (
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// Progress reports a long operation: on a terminal a bar redrawn in place
// with rate and ETA; otherwise a log line every few seconds, so logs of a
// cron job or CI step stay readable.
type Progress struct {
	mu       sync.Mutex
	w        io.Writer
	log      *slog.Logger
	label    string
	total    int64
	done     int64
	start    time.Time
	last     time.Time
	tty      bool
	every    time.Duration
	finished bool
}

// NewProgress starts reporting; total may be 0 when unknown.
func NewProgress(w io.Writer, log *slog.Logger, label string, total int64) *Progress {
	now := time.Now()
	p := &Progress{w: w, log: log, label: label, total: total, start: now, tty: IsTerminal(w), every: 5 * time.Second}
	if p.tty {
		p.every = 200 * time.Millisecond
	}
	return p
}

// Add records n more items done.
func (p *Progress) Add(n int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done += n
	if now := time.Now(); now.Sub(p.last) >= p.every {
		p.last = now
		p.draw(false)
	}
}

// Rate is items per second so far.
func (p *Progress) Rate() float64 {
	el := time.Since(p.start).Seconds()
	if el <= 0 {
		return 0
	}
	return float64(p.done) / el
}

// Done finishes the report.
func (p *Progress) Done() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.finished {
		return
	}
	p.finished = true
	p.draw(true)
}

func (p *Progress) draw(final bool) {
	rate := p.Rate()
	eta := "?"
	if p.total > 0 && rate > 0 && p.done <= p.total {
		eta = (time.Duration(float64(p.total-p.done)/rate) * time.Second).Round(time.Second).String()
	}
	if !p.tty {
		// Without a terminal: one line every few seconds, whatever the
		// log level (NewLogger always shows ProgressMessage).
		if p.log != nil {
			p.log.Info(ProgressMessage, "op", p.label, "done", p.done, "total", p.total, "rate_per_s", int64(rate), "eta", eta, "final", final)
		} else {
			fmt.Fprintf(p.w, "%s: %d/%d  %.0f/s  ETA %s\n", p.label, p.done, p.total, rate, eta)
		}
		return
	}
	bar := ""
	pct := ""
	if p.total > 0 {
		f := float64(p.done) / float64(p.total)
		if f > 1 {
			f = 1
		}
		n := int(f * 30)
		bar = "[" + strings.Repeat("=", n) + strings.Repeat(" ", 30-n) + "] "
		pct = fmt.Sprintf("%5.1f%% ", f*100)
	}
	fmt.Fprintf(p.w, "\r%s %s%s%d/%d  %.0f/s  ETA %s   ", p.label, bar, pct, p.done, p.total, rate, eta)
	if final {
		fmt.Fprintf(p.w, "\n")
	}
}
