// Package logclip shortens strings a local process chose before they are logged, so that a request
// cannot make the log grow by megabytes per line.
package logclip

import "unicode/utf8"

// Cut returns s cut to at most max bytes, without splitting a UTF-8 sequence, with "…" appended when
// something was cut.
func Cut(s string, max int) string {
	if len(s) <= max {
		return s
	}
	cut := max
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}
