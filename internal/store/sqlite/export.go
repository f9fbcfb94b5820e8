package sqlite

import (
	"context"
	"database/sql"
	"fmt"
)

// Tables are the store's tables, in an order that lets a copy insert each row after those it refers to.
var Tables = []string{"revision", "changes", "entries", "join_tokens", "agents", "authorities", "audit",
	"grants", "target_modes", "policy_bundles", "agent_policy", "policy_labels"}

// Export reads every table of the store at path, read-only, and hands fn each table's column names and
// rows (in primary-key order), for moving a deployment to another backend (kith store migrate). Open the
// store once with Open first, so that its schema is this binary's. Reads run in one transaction: a
// consistent snapshot even beside a running server.
func Export(ctx context.Context, path string, fn func(table string, cols []string, rows *sql.Rows) error) error {
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro&_pragma=busy_timeout(10000)")
	if err != nil {
		return err
	}
	defer db.Close()
	tx, err := db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return fmt.Errorf("export %s: %w", path, err)
	}
	defer tx.Rollback()
	for _, t := range Tables {
		if err := func() error {
			rows, err := tx.QueryContext(ctx, "SELECT * FROM "+t+" ORDER BY rowid")
			if err != nil {
				return err
			}
			defer rows.Close()
			cols, err := rows.Columns()
			if err != nil {
				return err
			}
			if err := fn(t, cols, rows); err != nil {
				return err
			}
			return rows.Err()
		}(); err != nil {
			return fmt.Errorf("export %s: table %s: %w", path, t, err)
		}
	}
	return nil
}
