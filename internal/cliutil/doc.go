// Package cliutil holds what every migctl command shares: the output
// printer (-o table|json, and JSON lines for --watch loops) with one table
// convention (yes/no, lists as "a, b", sections with their own header, a
// final "result" row), confirmation before a change (--yes, and refusal
// without a terminal), progress reporting (a bar with rate and ETA on a
// terminal, a line every few seconds otherwise), the stderr logger
// (--log-format text|json; a few messages — progress, backfill pauses,
// heal steps — printed whatever --log-level) and the exit codes scripts
// rely on.
package cliutil
