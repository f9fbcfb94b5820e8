//go:build race

package sqlite

// raceEnabled is true when built with -race, which slows the pure Go SQLite down tenfold: timing checks are
// skipped.
const raceEnabled = true
