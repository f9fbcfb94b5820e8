package ca

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"slices"
	"time"
)

// change is one transition being built: new or changed authorities, persisted together by commit.
type change struct {
	c       *CA
	now     time.Time // the transition's timestamp: strictly after every earlier one
	certNow time.Time // the clock reading, for certificate validity
	put     []*authority
	created []string // key IDs generated for this change, deleted if it is not committed
	retired []string // key IDs no longer needed once the change is committed
}

// newChange starts a transition at now. c.mu must be held.
func (c *CA) newChange(now time.Time) *change {
	now = now.UTC().Round(0)
	stamp := now
	if last := c.lastChange(c.auths, now); !stamp.After(last) {
		stamp = last.Add(time.Nanosecond)
	}
	return &change{c: c, now: stamp, certNow: now}
}

// set records a (new or changed) authority in the change, replacing an earlier version with the same ID.
func (ch *change) set(a *authority) *authority {
	for i, p := range ch.put {
		if p.ID == a.ID {
			ch.put[i] = a
			return a
		}
	}
	ch.put = append(ch.put, a)
	return a
}

func (ch *change) activate(a *authority) *authority {
	n := *a
	n.State, n.ActivatedAt = StateActive, ch.now
	return ch.set(&n)
}

func (ch *change) retire(a *authority) *authority {
	n := *a
	n.State, n.RetiredAt, n.signer = StateRetired, ch.now, nil
	if a.KeyID != "" {
		ch.retired = append(ch.retired, a.KeyID)
	}
	return ch.set(&n)
}

// abort deletes the keys generated for the change and returns err.
func (ch *change) abort(ctx context.Context, err error) error {
	ctx = context.WithoutCancel(ctx)
	for _, id := range ch.created {
		if derr := ch.c.keys.DeleteKey(ctx, id); derr != nil {
			ch.c.log.Warn("delete unused ca key", "key_id", id, "error", derr)
		}
	}
	return err
}

func (ch *change) generateKey(ctx context.Context, prefix string) (string, crypto.Signer, error) {
	keyID := prefix + "-" + randomHex(16)
	signer, err := ch.c.keys.GenerateKey(ctx, keyID)
	if err != nil {
		return "", nil, fmt.Errorf("generate key %s: %w", keyID, err)
	}
	ch.created = append(ch.created, keyID)
	return keyID, signer, nil
}

// newRoot creates a prepared self-signed root.
func (ch *change) newRoot(ctx context.Context) (*authority, error) {
	c := ch.c
	keyID, signer, err := ch.generateKey(ctx, "x509-root")
	if err != nil {
		return nil, err
	}
	skid, err := subjectKeyID(signer.Public())
	if err != nil {
		return nil, err
	}
	id := hex.EncodeToString(skid)
	subject := c.cfg.Subject
	subject.CommonName = "Kith Root CA " + id[:8]
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               subject,
		NotBefore:             ch.certNow.Add(-backdate),
		NotAfter:              ch.certNow.Add(c.cfg.RootTTL),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            1,
		SubjectKeyId:          skid,
		URIs:                  []*url.URL{c.td.ID().URL()},
	}
	return ch.newX509(id, KindX509Root, keyID, "", tmpl, tmpl, signer, signer)
}

// newIntermediate creates a prepared intermediate for owner (see Authority.Owner) minted by up: one of the
// CA's own roots (see c.minter), which caps it at the root's NotAfter, or the configured upstream authority.
func (ch *change) newIntermediate(ctx context.Context, up UpstreamAuthority, owner string) (*authority, error) {
	a, err := ch.mintIntermediate(ctx, up, owner)
	if err != nil && ch.c.cfg.Upstream != nil {
		return nil, fmt.Errorf("upstream authority: %w", err)
	}
	return a, err
}

func (ch *change) mintIntermediate(ctx context.Context, up UpstreamAuthority, owner string) (*authority, error) {
	c := ch.c
	keyID, signer, err := ch.generateKey(ctx, "x509-intermediate")
	if err != nil {
		return nil, err
	}
	skid, err := subjectKeyID(signer.Public())
	if err != nil {
		return nil, err
	}
	id := hex.EncodeToString(skid)
	subject := c.cfg.Subject
	subject.CommonName = "Kith Intermediate CA " + id[:8]
	if owner != "" {
		subject.OrganizationalUnit = []string{owner}
	}
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               subject,
		NotBefore:             ch.certNow.Add(-backdate),
		NotAfter:              ch.certNow.Add(c.cfg.IntermediateTTL),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
		SubjectKeyId:          skid,
		URIs:                  []*url.URL{c.td.ID().URL()},
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: subject, URIs: tmpl.URIs}, signer)
	if err != nil {
		return nil, fmt.Errorf("create intermediate csr: %w", err)
	}
	res, err := up.MintX509CA(ctx, MintRequest{CSR: csr, Template: tmpl, TTL: c.cfg.IntermediateTTL})
	if err != nil {
		return nil, err
	}
	parent, err := ch.checkMinted(res, signer.Public())
	if err != nil {
		return nil, err
	}
	cert := res.Chain[0]
	notAfter := chainNotAfter(res.Chain)
	if asked := tmpl.NotAfter; notAfter.Before(asked.Add(-time.Minute)) {
		c.log.Info("upstream shortened the intermediate's lifetime; it rotates earlier",
			"intermediate", id, "asked_not_after", asked, "not_after", notAfter)
	}
	var der []byte
	for _, ic := range res.Chain {
		der = append(der, ic.Raw...)
	}
	a := &authority{
		Authority: Authority{
			ID:        id,
			Kind:      KindX509Intermediate,
			State:     StatePrepared,
			KeyID:     keyID,
			CertDER:   der,
			ParentID:  parent.ID,
			Owner:     owner,
			NotBefore: cert.NotBefore,
			NotAfter:  notAfter,
			CreatedAt: ch.now,
		},
		cert:   cert,
		chain:  res.Chain[1:],
		pub:    cert.PublicKey,
		signer: signer,
	}
	return ch.set(a), nil
}

// checkMinted checks what an upstream returned for the intermediate key pub and returns the root
// authority its chain ends at; a root the CA did not know yet (only an upstream's) is recorded as active.
func (ch *change) checkMinted(res MintResult, pub crypto.PublicKey) (*authority, error) {
	if len(res.Chain) == 0 {
		return nil, errors.New("mint returned no certificate")
	}
	first := res.Chain[0]
	if k, ok := first.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !k.Equal(pub) {
		return nil, errors.New("minted certificate is not for the intermediate's key")
	}
	if !first.IsCA {
		return nil, errors.New("minted certificate is not a CA certificate")
	}
	for i := 0; i+1 < len(res.Chain); i++ {
		if err := res.Chain[i].CheckSignatureFrom(res.Chain[i+1]); err != nil {
			return nil, fmt.Errorf("minted chain: certificate %d is not signed by certificate %d: %w", i, i+1, err)
		}
	}
	last := res.Chain[len(res.Chain)-1]
	for _, root := range res.Roots {
		if last.CheckSignatureFrom(root) == nil {
			return ch.root(root)
		}
	}
	return nil, errors.New("minted chain does not end at any of the roots returned with it")
}

// root returns the non-retired root authority for cert. With an upstream authority, a root it has not seen
// is recorded as active and a retired one is activated again.
func (ch *change) root(cert *x509.Certificate) (*authority, error) {
	for _, a := range ch.authorities() {
		if a.Kind != KindX509Root || !a.cert.Equal(cert) {
			continue
		}
		if a.State != StateRetired {
			return a, nil
		}
		if ch.c.cfg.Upstream != nil {
			n := *a
			n.RetiredAt = time.Time{}
			return ch.activate(&n), nil
		}
		return nil, fmt.Errorf("root %s is retired", a.ID)
	}
	if ch.c.cfg.Upstream == nil {
		return nil, fmt.Errorf("root %q is not one of the ca's", cert.Subject.String())
	}
	sum := sha256.Sum256(cert.Raw)
	return ch.activate(&authority{
		Authority: Authority{
			ID:        hex.EncodeToString(sum[:20]),
			Kind:      KindX509Root,
			State:     StatePrepared,
			CertDER:   cert.Raw,
			NotBefore: cert.NotBefore,
			NotAfter:  cert.NotAfter,
			CreatedAt: ch.now,
		},
		cert: cert,
		pub:  cert.PublicKey,
	}), nil
}

// authorities is the CA's authorities as the change would leave them (unsorted).
func (ch *change) authorities() []*authority {
	out := make([]*authority, 0, len(ch.c.auths)+len(ch.put))
	for _, a := range ch.c.auths {
		if i := slices.IndexFunc(ch.put, func(p *authority) bool { return p.ID == a.ID }); i >= 0 {
			continue
		}
		out = append(out, a)
	}
	return append(out, ch.put...)
}

// syncUpstreamRoots records roots, an upstream authority's current roots: new ones become active root
// authorities (without a key) and active ones no longer among them are retired, unless an intermediate
// under them still signs.
func (ch *change) syncUpstreamRoots(roots []*x509.Certificate) error {
	if len(roots) == 0 {
		return errors.New("upstream authority returned no roots")
	}
	for _, r := range roots {
		if _, err := ch.root(r); err != nil {
			return err
		}
	}
	auths := ch.authorities()
	for _, a := range auths {
		if a.Kind != KindX509Root || a.State == StateRetired ||
			slices.ContainsFunc(roots, a.cert.Equal) ||
			slices.ContainsFunc(auths, func(i *authority) bool {
				return i.Kind == KindX509Intermediate && i.State != StateRetired && i.ParentID == a.ID
			}) {
			continue
		}
		ch.retire(a)
	}
	return nil
}

func (ch *change) newX509(id string, kind AuthorityKind, keyID, parentID string, tmpl, parent *x509.Certificate,
	signer, parentSigner crypto.Signer) (*authority, error) {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, signer.Public(), parentSigner)
	if err != nil {
		return nil, fmt.Errorf("create %s certificate: %w", kind, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse %s certificate: %w", kind, err)
	}
	a := &authority{
		Authority: Authority{
			ID:        id,
			Kind:      kind,
			State:     StatePrepared,
			KeyID:     keyID,
			CertDER:   der,
			ParentID:  parentID,
			NotBefore: cert.NotBefore,
			NotAfter:  cert.NotAfter,
			CreatedAt: ch.now,
		},
		cert:   cert,
		pub:    cert.PublicKey,
		signer: signer,
	}
	return ch.set(a), nil
}

// newJWT creates a prepared JWT signing key.
func (ch *change) newJWT(ctx context.Context) (*authority, error) {
	c := ch.c
	keyID, signer, err := ch.generateKey(ctx, "jwt")
	if err != nil {
		return nil, err
	}
	pub, ok := signer.Public().(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		return nil, fmt.Errorf("key manager returned a %T for jwt key %s, want ECDSA P-256", signer.Public(), keyID)
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("marshal jwt public key: %w", err)
	}
	notBefore := ch.certNow.Add(-backdate).Truncate(time.Second)
	a := &authority{
		Authority: Authority{
			ID:        randomHex(16),
			Kind:      KindJWT,
			State:     StatePrepared,
			KeyID:     keyID,
			PublicKey: der,
			NotBefore: notBefore,
			NotAfter:  ch.certNow.Add(c.cfg.IntermediateTTL).Truncate(time.Second),
			CreatedAt: ch.now,
		},
		pub:    pub,
		signer: signer,
	}
	return ch.set(a), nil
}

// commit persists the change, then makes it the CA's state and tells subscribers. On failure nothing
// changes and the keys generated for the change are deleted. c.mu must be held.
func (c *CA) commit(ctx context.Context, ch *change, actor, action string) error {
	if len(ch.put) == 0 {
		return nil
	}
	records := make([]Authority, len(ch.put))
	for i, a := range ch.put {
		records[i] = copyAuthority(a.Authority)
	}
	if err := c.store.PutAuthorities(ctx, actor, action, records); err != nil {
		return ch.abort(ctx, fmt.Errorf("persist %s: %w", action, err))
	}
	merged := make([]*authority, 0, len(c.auths)+len(ch.put))
	replaced := make(map[string]*authority, len(ch.put))
	for _, a := range ch.put {
		replaced[a.ID] = a
	}
	for _, a := range c.auths {
		if n, ok := replaced[a.ID]; ok {
			merged = append(merged, n)
			delete(replaced, a.ID)
			continue
		}
		merged = append(merged, a)
	}
	for _, a := range ch.put {
		if _, ok := replaced[a.ID]; ok {
			merged = append(merged, a)
		}
	}
	sortAuthorities(merged)
	c.auths = merged
	c.publish(ch.certNow)

	ctx = context.WithoutCancel(ctx)
	for _, id := range ch.retired {
		if err := c.keys.DeleteKey(ctx, id); err != nil {
			c.log.Warn("delete retired ca key", "key_id", id, "error", err)
		}
	}
	attrs := []any{"actor", actor, "action", action}
	for _, a := range ch.put {
		attrs = append(attrs, string(a.Kind)+"."+a.ID, string(a.State))
	}
	c.log.Info("ca authorities changed", attrs...)
	c.notify()
	return nil
}

// subjectKeyID is the leftmost 160 bits of the SHA-256 of the PKIX public key (RFC 7093 style).
func subjectKeyID(pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("marshal public key: %w", err)
	}
	sum := sha256.Sum256(der)
	return sum[:20], nil
}

// randomSerial returns a random, positive, non-zero 128-bit serial number.
func randomSerial() *big.Int {
	var b [16]byte
	for {
		_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
		if n := new(big.Int).SetBytes(b[:]); n.Sign() > 0 {
			return n
		}
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
