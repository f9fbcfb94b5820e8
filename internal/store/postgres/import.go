package postgres

import (
	"context"
	"crypto"
	"crypto/x509"
	"database/sql"
	"fmt"
	"strings"

	"github.com/kithid/kith/internal/store/sqlstore"
)

// Rows is what Import reads a table's rows from (a *sql.Rows of the source store).
type Rows interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
}

// Import copies a whole store into this one, which must be empty (no revision, no audit row), in one
// transaction under the write lock: export calls fn once per table with its column names (those of this
// schema, which the SQLite one shares) and rows. Values are kept as they are (times as stored, the audit
// chain's hashes), integers become booleans where this schema has BOOLEAN columns, and the identity
// sequences continue after the copied rows.
func (s *Store) Import(ctx context.Context, export func(fn func(table string, cols []string, rows Rows) error) error) error {
	return s.write(ctx, func(w *sqlstore.Tx) error {
		var rev, audits int64
		if err := w.QueryRow("SELECT (SELECT revision FROM revision WHERE id = 1), (SELECT count(*) FROM audit)").Scan(&rev, &audits); err != nil {
			return err
		}
		if rev != 0 || audits != 0 {
			return fmt.Errorf("import: the destination store is not empty (revision %d, %d audit events): migrate into a new database", rev, audits)
		}
		bools := map[string]bool{}
		rows, err := w.Query("SELECT table_name || '.' || column_name FROM information_schema.columns WHERE data_type = 'boolean' AND table_schema = current_schema()")
		if err != nil {
			return err
		}
		for rows.Next() {
			var c string
			if err := rows.Scan(&c); err != nil {
				rows.Close()
				return err
			}
			bools[c] = true
		}
		rows.Close()
		if _, err := w.Exec("DELETE FROM revision"); err != nil {
			return err
		}
		err = export(func(table string, cols []string, rows Rows) error {
			marks := strings.TrimSuffix(strings.Repeat("?, ", len(cols)), ", ")
			q := "INSERT INTO " + table + " (" + strings.Join(cols, ", ") + ") VALUES (" + marks + ")"
			vals := make([]any, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			for rows.Next() {
				if err := rows.Scan(ptrs...); err != nil {
					return err
				}
				args := make([]any, len(vals))
				for i, v := range vals {
					if n, ok := v.(int64); ok && bools[table+"."+cols[i]] {
						args[i] = n != 0
						continue
					}
					args[i] = v
				}
				if _, err := w.Exec(q, args...); err != nil {
					return fmt.Errorf("copy a row of %s: %w", table, err)
				}
			}
			return rows.Err()
		})
		if err != nil {
			return err
		}
		for _, t := range []string{"changes", "policy_bundles"} {
			if _, err := w.Exec("SELECT setval(pg_get_serial_sequence('" + t + "', 'seq'), coalesce((SELECT max(seq) FROM " + t + "), 0) + 1, false)"); err != nil {
				return fmt.Errorf("continue the sequence of %s: %w", t, err)
			}
		}
		return nil
	})
}

// ImportKey stores signer under id, sealed, for moving a deployment's CA keys from another key manager.
// An id already stored is an error.
func (k *Keys) ImportKey(ctx context.Context, id string, signer crypto.Signer) error {
	der, err := x509.MarshalPKCS8PrivateKey(signer)
	if err != nil {
		return fmt.Errorf("import key %q: %w", id, err)
	}
	res, err := k.db.ExecContext(ctx, "INSERT INTO kith_ca_keys (id, sealed) VALUES ($1, $2) ON CONFLICT DO NOTHING", id, k.seal(id, der))
	if err != nil {
		return fmt.Errorf("import key %q: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("import key %q: the database already holds a key with this id", id)
	}
	return nil
}

var _ Rows = (*sql.Rows)(nil)
