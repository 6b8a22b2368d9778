// Package cliutil holds what every migctl command shares: the output
// printer (-o table|json), confirmation before a change (--yes, and refusal
// without a terminal), progress reporting (a bar with rate and ETA on a
// terminal, plain log lines otherwise) and the exit codes scripts rely on.
package cliutil
