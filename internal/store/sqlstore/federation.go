package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/kithid/kith/internal/store"
)

func trustDomainNames(tds []spiffeid.TrustDomain) []string {
	out := make([]string, 0, len(tds))
	for _, td := range tds {
		out = append(out, td.Name())
	}
	return out
}

func decodeTrustDomains(doc string) ([]spiffeid.TrustDomain, error) {
	var names []string
	if err := decodeJSON(doc, &names); err != nil {
		return nil, err
	}
	if len(names) == 0 {
		return nil, nil
	}
	out := make([]spiffeid.TrustDomain, 0, len(names))
	for _, n := range names {
		td, err := spiffeid.TrustDomainFromString(n)
		if err != nil {
			return nil, fmt.Errorf("federates_with %q: %w", n, err)
		}
		out = append(out, td)
	}
	return out, nil
}

type bundleDetail struct {
	TrustDomain string `json:"trust_domain"`
	Source      string `json:"source"`
	Sequence    uint64 `json:"sequence"`
	Revision    int64  `json:"revision"`
}

type federationDetail struct {
	TrustDomain       string `json:"trust_domain"`
	BundleEndpointURL string `json:"bundle_endpoint_url"`
	Profile           string `json:"profile"`
	EndpointSPIFFEID  string `json:"endpoint_spiffe_id,omitempty"`
	Revision          int64  `json:"revision"`
}

func (w *Tx) putBundle(b store.FederatedBundle) (store.FederatedBundle, error) {
	if b.TrustDomain.IsZero() {
		return store.FederatedBundle{}, errors.New("bundle has no trust domain")
	}
	rev, err := w.bump()
	if err != nil {
		return store.FederatedBundle{}, err
	}
	b.UpdatedAt, b.Revision = w.now, rev
	if _, err := w.exec(`INSERT INTO federated_bundles (trust_domain, bundle, source, sequence, updated_at, revision)
		VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (trust_domain) DO UPDATE SET bundle = excluded.bundle,
		source = excluded.source, sequence = excluded.sequence, updated_at = excluded.updated_at, revision = excluded.revision`,
		b.TrustDomain.Name(), string(b.Bundle), b.Source, int64(b.Sequence), timeValue(b.UpdatedAt), rev); err != nil {
		return store.FederatedBundle{}, fmt.Errorf("put bundle of %s: %w", b.TrustDomain, err)
	}
	if err := w.change(store.KindBundle, b.TrustDomain.Name(), false); err != nil {
		return store.FederatedBundle{}, err
	}
	return b, nil
}

// PutBundle inserts or replaces a federated bundle with its audit row.
func (s *Store) PutBundle(ctx context.Context, actor, action string, b store.FederatedBundle) (store.FederatedBundle, error) {
	var out store.FederatedBundle
	err := s.write(ctx, func(w *Tx) error {
		var err error
		if out, err = w.putBundle(b); err != nil {
			return err
		}
		return w.audit(actor, action, b.TrustDomain.Name(), bundleDetail{
			TrustDomain: b.TrustDomain.Name(), Source: b.Source, Sequence: b.Sequence, Revision: out.Revision})
	})
	if err != nil {
		return store.FederatedBundle{}, fmt.Errorf("put bundle: %w", err)
	}
	return out, nil
}

// DeleteBundle deletes a federated bundle.
func (s *Store) DeleteBundle(ctx context.Context, actor string, td spiffeid.TrustDomain) (store.FederatedBundle, error) {
	var old store.FederatedBundle
	err := s.write(ctx, func(w *Tx) error {
		var err error
		if old, err = scanBundle(w.queryRow("SELECT "+bundleColumns+" FROM federated_bundles WHERE trust_domain = ?", td.Name())); errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("bundle of %s: %w", td, store.ErrNotFound)
		} else if err != nil {
			return err
		}
		if _, err := w.exec("DELETE FROM federated_bundles WHERE trust_domain = ?", td.Name()); err != nil {
			return err
		}
		if err := w.change(store.KindBundle, td.Name(), true); err != nil {
			return err
		}
		return w.audit(actor, "bundle.delete", td.Name(), bundleDetail{TrustDomain: td.Name(), Source: old.Source, Sequence: old.Sequence, Revision: w.rev})
	})
	if err != nil {
		return store.FederatedBundle{}, fmt.Errorf("delete bundle: %w", err)
	}
	return old, nil
}

const bundleColumns = "trust_domain, bundle, source, sequence, updated_at, revision"

func scanBundle(row scanner) (store.FederatedBundle, error) {
	var (
		b       store.FederatedBundle
		td, doc string
		seq     int64
		updated sql.NullString
	)
	if err := row.Scan(&td, &doc, &b.Source, &seq, &updated, &b.Revision); err != nil {
		return store.FederatedBundle{}, err
	}
	var err error
	if b.TrustDomain, err = spiffeid.TrustDomainFromString(td); err != nil {
		return store.FederatedBundle{}, err
	}
	if b.UpdatedAt, err = parseTime(updated); err != nil {
		return store.FederatedBundle{}, err
	}
	b.Bundle, b.Sequence = []byte(doc), uint64(seq)
	return b, nil
}

// ListBundles returns every federated bundle ordered by trust domain.
func (s *Store) ListBundles(ctx context.Context) ([]store.FederatedBundle, error) {
	out, err := queryAll(ctx, s.reader, scanBundle, "SELECT "+bundleColumns+" FROM federated_bundles ORDER BY trust_domain")
	if err != nil {
		return nil, fmt.Errorf("list bundles: %w", err)
	}
	return out, nil
}

const federationColumns = "trust_domain, bundle_endpoint_url, profile, endpoint_spiffe_id, created_at, updated_at, revision, last_refresh, next_refresh, last_error"

func scanFederation(row scanner) (store.Federation, error) {
	var (
		f                                   store.Federation
		td, endpointID                      string
		created, updated, lastRef, nextRefr sql.NullString
	)
	if err := row.Scan(&td, &f.BundleEndpointURL, &f.Profile, &endpointID, &created, &updated, &f.Revision, &lastRef, &nextRefr, &f.Status.LastError); err != nil {
		return store.Federation{}, err
	}
	var err error
	if f.TrustDomain, err = spiffeid.TrustDomainFromString(td); err != nil {
		return store.Federation{}, err
	}
	if f.EndpointSPIFFEID, err = parseID(endpointID); err != nil {
		return store.Federation{}, err
	}
	if f.CreatedAt, err = parseTime(created); err != nil {
		return store.Federation{}, err
	}
	if f.UpdatedAt, err = parseTime(updated); err != nil {
		return store.Federation{}, err
	}
	if f.Status.LastRefresh, err = parseTime(lastRef); err != nil {
		return store.Federation{}, err
	}
	if f.Status.NextRefresh, err = parseTime(nextRefr); err != nil {
		return store.Federation{}, err
	}
	return f, nil
}

// PutFederation creates or replaces a relationship, with its first bundle when given.
func (s *Store) PutFederation(ctx context.Context, actor string, create bool, f store.Federation, first *store.FederatedBundle) (store.Federation, error) {
	if f.TrustDomain.IsZero() {
		return store.Federation{}, errors.New("put federation: no trust domain")
	}
	err := s.write(ctx, func(w *Tx) error {
		old, err := scanFederation(w.queryRow("SELECT "+federationColumns+" FROM federations WHERE trust_domain = ?", f.TrustDomain.Name()))
		exists := err == nil
		switch {
		case err != nil && !errors.Is(err, sql.ErrNoRows):
			return err
		case create && exists:
			return fmt.Errorf("federation with %s: %w", f.TrustDomain, store.ErrAlreadyExists)
		case !create && !exists:
			return fmt.Errorf("federation with %s: %w", f.TrustDomain, store.ErrNotFound)
		}
		rev, err := w.bump()
		if err != nil {
			return err
		}
		f.CreatedAt, f.UpdatedAt, f.Revision = w.now, w.now, rev
		if exists {
			f.CreatedAt = old.CreatedAt
		}
		// A changed relationship is refreshed at once: its status starts over.
		f.Status = store.FederationStatus{}
		if _, err := w.exec("INSERT INTO federations ("+federationColumns+") VALUES (?, ?, ?, ?, ?, ?, ?, NULL, NULL, '')"+
			" ON CONFLICT (trust_domain) DO UPDATE SET bundle_endpoint_url = excluded.bundle_endpoint_url, profile = excluded.profile,"+
			" endpoint_spiffe_id = excluded.endpoint_spiffe_id, created_at = excluded.created_at, updated_at = excluded.updated_at,"+
			" revision = excluded.revision, last_refresh = NULL, next_refresh = NULL, last_error = ''",
			f.TrustDomain.Name(), f.BundleEndpointURL, f.Profile, f.EndpointSPIFFEID.String(),
			timeValue(f.CreatedAt), timeValue(f.UpdatedAt), rev); err != nil {
			return fmt.Errorf("put federation with %s: %w", f.TrustDomain, err)
		}
		if err := w.change(store.KindFederation, f.TrustDomain.Name(), false); err != nil {
			return err
		}
		action := "federation.update"
		if create {
			action = "federation.create"
		}
		if err := w.audit(actor, action, f.TrustDomain.Name(), federationDetail{
			TrustDomain: f.TrustDomain.Name(), BundleEndpointURL: f.BundleEndpointURL, Profile: f.Profile,
			EndpointSPIFFEID: f.EndpointSPIFFEID.String(), Revision: rev}); err != nil {
			return err
		}
		if first != nil {
			b, err := w.putBundle(*first)
			if err != nil {
				return err
			}
			return w.audit(actor, "bundle.set", b.TrustDomain.Name(), bundleDetail{
				TrustDomain: b.TrustDomain.Name(), Source: b.Source, Sequence: b.Sequence, Revision: rev})
		}
		return nil
	})
	if err != nil {
		return store.Federation{}, fmt.Errorf("put federation: %w", err)
	}
	return f, nil
}

// DeleteFederation deletes a relationship; its bundle stays.
func (s *Store) DeleteFederation(ctx context.Context, actor string, td spiffeid.TrustDomain) (store.Federation, error) {
	var old store.Federation
	err := s.write(ctx, func(w *Tx) error {
		var err error
		if old, err = scanFederation(w.queryRow("SELECT "+federationColumns+" FROM federations WHERE trust_domain = ?", td.Name())); errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("federation with %s: %w", td, store.ErrNotFound)
		} else if err != nil {
			return err
		}
		if _, err := w.exec("DELETE FROM federations WHERE trust_domain = ?", td.Name()); err != nil {
			return err
		}
		if err := w.change(store.KindFederation, td.Name(), true); err != nil {
			return err
		}
		return w.audit(actor, "federation.delete", td.Name(), federationDetail{
			TrustDomain: td.Name(), BundleEndpointURL: old.BundleEndpointURL, Profile: old.Profile,
			EndpointSPIFFEID: old.EndpointSPIFFEID.String(), Revision: w.rev})
	})
	if err != nil {
		return store.Federation{}, fmt.Errorf("delete federation: %w", err)
	}
	return old, nil
}

// ListFederations returns every relationship ordered by trust domain.
func (s *Store) ListFederations(ctx context.Context) ([]store.Federation, error) {
	out, err := queryAll(ctx, s.reader, scanFederation, "SELECT "+federationColumns+" FROM federations ORDER BY trust_domain")
	if err != nil {
		return nil, fmt.Errorf("list federations: %w", err)
	}
	return out, nil
}

// SetFederationStatus records how a refresh went, without a revision or audit row.
func (s *Store) SetFederationStatus(ctx context.Context, td spiffeid.TrustDomain, st store.FederationStatus) error {
	return s.write(ctx, func(w *Tx) error {
		res, err := w.exec("UPDATE federations SET last_refresh = ?, next_refresh = ?, last_error = ? WHERE trust_domain = ?",
			timeValue(st.LastRefresh), timeValue(st.NextRefresh), st.LastError, td.Name())
		if err != nil {
			return fmt.Errorf("set federation status of %s: %w", td, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("federation with %s: %w", td, store.ErrNotFound)
		}
		return nil
	})
}
