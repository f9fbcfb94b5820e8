package gitsync

import "fmt"

// Limits bound what a policy directory or commit may hold under its policy path, so that a hostile or
// mistaken repository cannot take the server's memory: a policy is a few small files. Zero fields take the
// defaults. Only files the loader reads count (*.rego, the data file at the top); nothing outside the
// policy path is read.
type Limits struct {
	MaxFileBytes  int64 // one .rego file; default DefaultMaxFileBytes
	MaxDataBytes  int64 // the data file (data.json / data.yaml); default DefaultMaxDataBytes
	MaxFiles      int   // .rego files and the data file; default DefaultMaxFiles
	MaxTotalBytes int64 // all of them together; default DefaultMaxTotalBytes
	// MaxFetchBytes bounds what one fetch writes (the commit's pack, every file of it: go-git cannot fetch
	// the policy path alone); default DefaultMaxFetchBytes.
	MaxFetchBytes int64
}

// The default limits: generous for a policy repository (Kith's examples are a few KiB), far from what
// would hurt a server.
const (
	DefaultMaxFileBytes  = 1 << 20  // 1 MiB
	DefaultMaxDataBytes  = 16 << 20 // 16 MiB: ≈ 100,000 grants
	DefaultMaxFiles      = 1000
	DefaultMaxTotalBytes = 32 << 20  // 32 MiB
	DefaultMaxFetchBytes = 256 << 20 // 256 MiB
)

// withDefaults fills the zero fields.
func (l Limits) withDefaults() Limits {
	if l.MaxFileBytes == 0 {
		l.MaxFileBytes = DefaultMaxFileBytes
	}
	if l.MaxDataBytes == 0 {
		l.MaxDataBytes = DefaultMaxDataBytes
	}
	if l.MaxFiles == 0 {
		l.MaxFiles = DefaultMaxFiles
	}
	if l.MaxTotalBytes == 0 {
		l.MaxTotalBytes = DefaultMaxTotalBytes
	}
	if l.MaxFetchBytes == 0 {
		l.MaxFetchBytes = DefaultMaxFetchBytes
	}
	return l
}

// budget counts the files read against Limits; each check names the file and the limit (and the config
// key that raises it).
type budget struct {
	l      Limits
	prefix string // the policy path in the repository, to name files by their path there ("policy/")
	files  int
	total  int64
}

func newBudget(l Limits) *budget { return &budget{l: l.withDefaults()} }

// take accounts for file name of size bytes before it is read.
func (b *budget) take(rel string, size int64) error {
	max, key := b.l.MaxFileBytes, "policy.git.max_file_bytes"
	if isDataFile(rel) {
		max, key = b.l.MaxDataBytes, "policy.git.max_data_bytes"
	}
	name := b.prefix + rel
	if size > max {
		return fmt.Errorf("%s is %d bytes, more than the %d a policy file may have (%s)", name, size, max, key)
	}
	b.files++
	if b.files > b.l.MaxFiles {
		return fmt.Errorf("%s: the policy path holds more than %d policy files (policy.git.max_files)", name, b.l.MaxFiles)
	}
	b.total += size
	if b.total > b.l.MaxTotalBytes {
		return fmt.Errorf("%s: the policy files read so far come to %d bytes, more than the %d allowed in all (policy.git.max_total_bytes)", name, b.total, b.l.MaxTotalBytes)
	}
	return nil
}
