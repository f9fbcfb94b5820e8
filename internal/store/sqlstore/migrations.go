package sqlstore

import (
	"fmt"
	"io/fs"
	"path"
	"sort"

	"github.com/kithid/kith/internal/store"
)

// Migration is one embedded schema step; applying migration i yields schema version i+1.
type Migration struct {
	Name string
	SQL  string
}

// Migrations reads the *.sql files of dir in fsys (a backend's embedded migrations), in name order.
func Migrations(fsys fs.FS, dir string) ([]Migration, error) {
	names, err := fs.Glob(fsys, path.Join(dir, "*.sql"))
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	out := make([]Migration, 0, len(names))
	for _, n := range names {
		b, err := fs.ReadFile(fsys, n)
		if err != nil {
			return nil, err
		}
		out = append(out, Migration{Name: n, SQL: string(b)})
	}
	return out, nil
}

// SchemaTooNewError refuses a database written by a newer Kith; it wraps store.ErrSchemaTooNew.
type SchemaTooNewError struct {
	Where         string // the database, as the user named it
	Have, Support int    // its schema version, and the newest this binary knows
}

func (e *SchemaTooNewError) Error() string {
	return fmt.Sprintf("store at %s has schema version %d but this kith supports up to %d: upgrade kith", e.Where, e.Have, e.Support)
}

func (e *SchemaTooNewError) Unwrap() error { return store.ErrSchemaTooNew }
