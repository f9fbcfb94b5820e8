package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/kithid/kith/ca"
	"github.com/kithid/kith/internal/atomicfile"
	"github.com/kithid/kith/internal/store/sqlite"
)

// markerFile, in the data dir, says the directory was initialised: it is written once the CA has its first
// keys and rewritten when the roots change, and names the roots by SHA-256 so that a re-initialisation can
// record which CA it replaced even when the database that held the certificates is gone.
const markerFile = "initialized.json"

// checkpointFile, in the data dir, holds the audit log's signed head (see auditHead).
const checkpointFile = "audit-head.json"

// marker is the content of markerFile.
type marker struct {
	TrustDomain   string       `json:"trust_domain"`
	InitializedAt time.Time    `json:"initialized_at"`
	UpdatedAt     time.Time    `json:"updated_at"`
	Roots         []markerRoot `json:"roots"`
}

type markerRoot struct {
	ID     string `json:"id"`
	State  string `json:"state"`
	SHA256 string `json:"sha256"` // of the DER certificate, hex
}

// storeState is what the data dir's database holds before the server uses it.
type storeState int

const (
	storeMissing storeState = iota // no file
	storeEmpty                     // a file of 0 bytes
	storeNoCA                      // a database without CA authorities: a new one
	storeHasCA                     // a database with a CA
)

func (s storeState) String() string {
	switch s {
	case storeMissing:
		return "missing"
	case storeEmpty:
		return "empty (0 bytes)"
	case storeNoCA:
		return "a new database without a CA"
	default:
		return "intact"
	}
}

// dataDir is the server's data directory and the database in it.
type dataDir struct {
	dir    string // data dir
	dbPath string // the sqlite file (store.dsn)
	now    func() time.Time
}

func (d dataDir) markerPath() string { return filepath.Join(d.dir, markerFile) }
func (d dataDir) keysDir() string    { return filepath.Join(d.dir, "keys") }

// initialised reports whether the data dir was set up by an earlier start: the marker is there, or CA
// keys are (a data dir from before the marker existed).
func (d dataDir) initialised() (bool, string, error) {
	if _, err := os.Stat(d.markerPath()); err == nil {
		return true, d.markerPath() + " exists", nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return false, "", fmt.Errorf("data dir: %w", err)
	}
	keys, err := os.ReadDir(d.keysDir())
	if errors.Is(err, fs.ErrNotExist) {
		return false, "", nil
	}
	if err != nil {
		return false, "", fmt.Errorf("data dir: %w", err)
	}
	for _, k := range keys {
		if filepath.Ext(k.Name()) == ".pem" {
			return true, "CA keys are in " + d.keysDir(), nil
		}
	}
	return false, "", nil
}

// storeState looks at the database without creating it: missing, empty, or opened to see whether it holds
// a CA.
func (d dataDir) storeState(ctx context.Context) (storeState, error) {
	fi, err := os.Stat(d.dbPath)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return storeMissing, nil
	case err != nil:
		return 0, fmt.Errorf("store: %w", err)
	case fi.Size() == 0:
		if wal, err := os.Stat(d.dbPath + "-wal"); err == nil && wal.Size() > 0 {
			break // the database is all in its WAL still: open it
		}
		return storeEmpty, nil
	}
	has, err := sqlite.HasAuthorities(ctx, d.dbPath)
	if err != nil {
		// Not readable as a database: Open says what is wrong with it (and refuses it) next.
		return storeHasCA, nil
	}
	if !has {
		return storeNoCA, nil
	}
	return storeHasCA, nil
}

// errLostStore is the refusal to start on an initialised data dir whose database is gone: starting would
// make a new CA that no agent or workload trusts and an audit log that starts again at 1.
func (d dataDir) errLostStore(state storeState, why string) error {
	return fmt.Errorf("refusing to start: the data dir %s was initialised (%s) but its database %s is %s; "+
		"starting would silently create a new CA and a new audit log. Restore %s from a backup (with the server "+
		"stopped), or, to start over with a new CA on purpose, run `kith server --reinit`: it moves the old keys "+
		"and database aside into the data dir and records the old root's fingerprint in the new audit log",
		d.dir, why, d.dbPath, state, filepath.Base(d.dbPath))
}

// readMarker returns the marker, or a zero marker and false if there is none.
func (d dataDir) readMarker() (marker, bool, error) {
	b, err := os.ReadFile(d.markerPath())
	if errors.Is(err, fs.ErrNotExist) {
		return marker{}, false, nil
	}
	if err != nil {
		return marker{}, false, err
	}
	var m marker
	if err := json.Unmarshal(b, &m); err != nil {
		return marker{}, false, fmt.Errorf("%s: %w", d.markerPath(), err)
	}
	return m, true, nil
}

// writeMarker records the CA's current roots in the marker (atomically: a temp file renamed over it).
func (d dataDir) writeMarker(td string, auths []ca.Authority) error {
	old, _, err := d.readMarker()
	if err != nil {
		old = marker{}
	}
	now := d.now().UTC()
	m := marker{TrustDomain: td, InitializedAt: old.InitializedAt, UpdatedAt: now, Roots: []markerRoot{}}
	if m.InitializedAt.IsZero() {
		m.InitializedAt = now
	}
	for _, a := range auths {
		if a.Kind != ca.KindX509Root || a.State == ca.StateRetired {
			continue
		}
		sum := sha256.Sum256(a.CertDER)
		m.Roots = append(m.Roots, markerRoot{ID: a.ID, State: string(a.State), SHA256: hex.EncodeToString(sum[:])})
	}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(d.markerPath(), append(b, '\n'))
}

// writeFileAtomic writes data to a temporary file in path's directory, syncs it and renames it over path.
func writeFileAtomic(path string, data []byte) error { return writeFile(path, data, true) }

// writeFileNoSync is writeFileAtomic without the sync: readers see the old or the new content, never a mix,
// but a power loss may leave the old one.
func writeFileNoSync(path string, data []byte) error { return writeFile(path, data, false) }

func writeFile(path string, data []byte, sync bool) error {
	return atomicfile.WriteBytes(path, data, atomicfile.Options{NoSync: !sync})
}

// reinitRecord is the detail of the server.reinit audit row.
type reinitRecord struct {
	OldRootSHA256 []string `json:"old_root_sha256"`
	OldTrustDom   string   `json:"old_trust_domain,omitempty"`
	Store         string   `json:"store_was"`
	MovedTo       string   `json:"moved_to"`
	Note          string   `json:"note,omitempty"`
}

// reinit moves the old keys, database, marker and audit checkpoint into a new directory
// <data dir>/replaced-<time>, keeping them, and returns what the audit row records.
func (d dataDir) reinit(state storeState) (reinitRecord, error) {
	rec := reinitRecord{OldRootSHA256: []string{}, Store: state.String()}
	m, ok, err := d.readMarker()
	switch {
	case err != nil:
		rec.Note = "the marker could not be read: " + err.Error()
	case !ok:
		rec.Note = "no " + markerFile + ": the old root's fingerprint is unknown"
	default:
		rec.OldTrustDom = m.TrustDomain
		for _, r := range m.Roots {
			rec.OldRootSHA256 = append(rec.OldRootSHA256, r.SHA256)
		}
	}
	aside := filepath.Join(d.dir, "replaced-"+d.now().UTC().Format("20060102T150405Z"))
	if err := os.Mkdir(aside, 0o700); err != nil {
		return rec, fmt.Errorf("reinit: %w", err)
	}
	rec.MovedTo = aside
	for _, p := range []string{d.keysDir(), d.dbPath, d.dbPath + "-wal", d.dbPath + "-shm", d.markerPath(), filepath.Join(d.dir, checkpointFile)} {
		if _, err := os.Lstat(p); errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err := os.Rename(p, filepath.Join(aside, filepath.Base(p))); err != nil {
			return rec, fmt.Errorf("reinit: move %s aside: %w", p, err)
		}
	}
	return rec, nil
}

// prepare checks the data dir before the store opens. An initialised data dir whose database is missing,
// empty or without a CA is refused, unless reinit is set: then the old files are moved aside and the
// returned record is for the new audit log. reinit on an intact store is refused too: it is not a way to
// rotate the CA (kith ca rotate is).
func (d dataDir) prepare(ctx context.Context, reinit bool, log *slog.Logger) (*reinitRecord, error) {
	initialised, why, err := d.initialised()
	if err != nil {
		return nil, err
	}
	state, err := d.storeState(ctx)
	if err != nil {
		return nil, err
	}
	switch {
	case state == storeHasCA && reinit:
		return nil, fmt.Errorf("--reinit refused: the database %s is intact and holds a CA; --reinit only starts over "+
			"when the database is missing or empty. To replace the CA keys use `kith ca rotate --root`", d.dbPath)
	case state == storeHasCA:
		return nil, nil
	case !initialised:
		if reinit {
			log.Warn("--reinit: the data dir was not initialised; starting as a new install", "data_dir", d.dir)
		}
		return nil, nil
	case !reinit:
		return nil, d.errLostStore(state, why)
	}
	rec, err := d.reinit(state)
	if err != nil {
		return nil, err
	}
	return &rec, nil
}

// keepMarker rewrites the data dir's marker whenever the CA changes, so that it names the current roots.
func (s *Server) keepMarker(ctx context.Context) error {
	changed, stop := s.ca.Subscribe()
	defer stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		}
		if err := s.dd.writeMarker(s.td.Name(), s.ca.Authorities()); err != nil {
			s.log.Error("data dir: cannot record the CA's roots in the marker", "path", s.dd.markerPath(), "error", err)
		}
	}
}
