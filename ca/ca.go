package ca

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"reflect"
	"regexp"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// ErrInvalidRequest is wrapped by every error that rejects caller input (a bad CSR, ID, TTL or audience).
var ErrInvalidRequest = errors.New("invalid request")

// Config configures New. Only TrustDomain, Keys and Store are required.
type Config struct {
	TrustDomain spiffeid.TrustDomain // required
	Keys        KeyManager           // required: holds the CA private keys
	Store       AuthorityStore       // required: persists the authority records
	// Upstream signs the CA's intermediates and supplies the roots of the bundle. Zero: the CA is its own
	// root (self-signed roots, rotated with RootOverlap).
	Upstream UpstreamAuthority
	// UpstreamName names the upstream in Status and logs (e.g. "vault https://vault:8200 pki"). Zero: "upstream".
	UpstreamName string
	// UpstreamRetryMax caps the wait between retries after failed upstream calls: 1 s, doubling up to it.
	// Zero: 30 s.
	UpstreamRetryMax time.Duration
	Now              func() time.Time // zero: time.Now
	Logger           *slog.Logger     // zero: discard

	RootTTL         time.Duration // zero: 365 days; unused with an Upstream
	IntermediateTTL time.Duration // zero: 7 days; also the JWT signing key lifetime
	X509SVIDTTL     time.Duration // zero: 1h; used when a request asks for 0
	MaxX509SVIDTTL  time.Duration // zero: 24h
	MinSVIDTTL      time.Duration // zero: 1m; the shortest X.509- or JWT-SVID a request may ask for
	JWTSVIDTTL      time.Duration // zero: 5m; used when a request asks for 0
	MaxJWTSVIDTTL   time.Duration // zero: 1h
	RootOverlap     time.Duration // zero: 2 × MaxX509SVIDTTL; how long a new root (or an upstream's roots, when switching to it) is published before it signs
	Subject         pkix.Name     // zero: O=Kith; the CommonName is set per authority
	// JWTIssuer is the iss claim of JWT-SVIDs (an OIDC relying party wants the issuer of the discovery
	// document there). Zero: no iss claim, which the JWT-SVID specification allows.
	JWTIssuer string
	// Shared is set when several CAs (servers) share Store and Keys; see Shared. Zero: the CA is alone.
	Shared *Shared
}

// Shared configures a CA that shares its store and key manager with the CAs of other servers. They issue
// under the same roots (self-signed or an upstream's) and JWT keys, and each signs X.509-SVIDs with an
// intermediate of its own, owned by its Name:
//
//   - every CA prepares, activates and retires its own intermediates (also one under a root being rotated
//     in); a CA that has none (a new server) makes one when it starts;
//   - the leader (one CA at a time, see Leader) also rotates the roots and the JWT keys, switches between
//     self-signed and upstream roots, moves every server's intermediate to a new root when it switches
//     (making one for a server that has not prepared its own), and retires the intermediates of servers
//     that are gone once they have expired;
//   - every change is made under Lock, after reading the authorities again, so changes made by different
//     servers never interleave.
type Shared struct {
	// Name of this server among those sharing the store: the Owner of its intermediates and the OU of their
	// subject. Required; stable across restarts (a new name is a new server, which makes a new intermediate).
	Name string
	// Lock runs fn while holding a lock all the servers share (a database lock). Required.
	Lock func(ctx context.Context, fn func() error) error
	// Leader reports whether this server is the one rotating roots and JWT keys now. Required.
	Leader func() bool
}

// serverName is what Shared.Name may be: it goes in the OU of the server's intermediates.
var serverName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// ValidServerName reports whether name may name a server sharing a store (Shared.Name): 1 to 63 letters,
// digits, '.', '_' or '-', starting with a letter or digit.
func ValidServerName(name string) bool { return serverName.MatchString(name) }

// backdate is how far before "now" certificates start, to absorb clock skew.
const backdate = time.Minute

// CA is a certificate authority for one trust domain. It is safe for concurrent use.
type CA struct {
	cfg   Config // defaults filled in
	td    spiffeid.TrustDomain
	now   func() time.Time
	log   *slog.Logger
	keys  KeyManager
	store AuthorityStore
	// upstream is cfg.Upstream with every call's outcome recorded; nil without one.
	upstream *observedUpstream

	leafSubject []byte     // DER of cfg.Subject: the subject of leaves without a DNS name
	x509Steps   []x509Step // the X.509-SVID issuance checks and modifiers, in order
	jwtSteps    []jwtStep  // the JWT-SVID issuance checks and modifiers, in order

	mu    sync.Mutex   // serializes transitions; guards auths
	auths []*authority // every known authority, sorted; entries are never modified, only replaced

	state atomic.Pointer[state] // what signers and readers use

	subMu sync.Mutex
	subs  map[chan struct{}]struct{}

	issuer atomic.Pointer[string] // the iss claim; see SetJWTIssuer

	owner string        // cfg.Shared.Name; empty for a CA alone
	kick  chan struct{} // makes Run tick now; see Kick
}

// authority is an Authority with its parsed certificate or public key and, unless retired, its key.
type authority struct {
	Authority
	cert   *x509.Certificate   // X.509 authorities
	chain  []*x509.Certificate // intermediates minted by an upstream: the upstream's intermediates above cert
	pub    crypto.PublicKey
	signer crypto.Signer // nil for retired authorities
}

// state is an immutable snapshot of what the CA signs with and publishes.
type state struct {
	x509Cert     *x509.Certificate   // active intermediate
	x509Chain    []*x509.Certificate // x509Cert and the upstream intermediates above it: what follows the leaf
	x509Signer   crypto.Signer
	x509NotAfter time.Time // the earliest NotAfter in x509Chain
	jwtKID       string
	jwtSigner    crypto.Signer
	jwtNotAfter  time.Time
	jwtHeader    string // base64url of the JOSE header: alg, kid, typ
	bundle       bundleSnapshot
	auths        []Authority
}

// New returns a CA for cfg.TrustDomain. It loads the authorities from cfg.Store and their keys from
// cfg.Keys; when the store has none it creates an active root, intermediate and JWT key and persists them.
func New(ctx context.Context, cfg Config) (*CA, error) {
	if err := fillConfig(&cfg); err != nil {
		return nil, fmt.Errorf("new ca: %w", err)
	}
	subject, err := asn1.Marshal(cfg.Subject.ToRDNSequence())
	if err != nil {
		return nil, fmt.Errorf("new ca: marshal subject: %w", err)
	}
	c := &CA{
		cfg:         cfg,
		td:          cfg.TrustDomain,
		now:         cfg.Now,
		log:         cfg.Logger,
		keys:        cfg.Keys,
		store:       cfg.Store,
		leafSubject: subject,
		x509Steps:   x509Steps(cfg),
		jwtSteps:    jwtSteps(cfg),
		subs:        make(map[chan struct{}]struct{}),
		kick:        make(chan struct{}, 1),
	}
	if cfg.Shared != nil {
		c.owner = cfg.Shared.Name
	}
	if cfg.Upstream != nil {
		c.upstream = &observedUpstream{UpstreamAuthority: cfg.Upstream, name: cfg.UpstreamName, now: cfg.Now, retryMax: cfg.UpstreamRetryMax}
	}
	if err := c.locked(ctx, func() error { return c.start(ctx) }); err != nil {
		return nil, fmt.Errorf("new ca: %w", err)
	}
	return c, nil
}

// locked runs fn under the shared lock of CAs that share a store; a CA alone just runs it.
func (c *CA) locked(ctx context.Context, fn func() error) error {
	if c.cfg.Shared == nil {
		return fn()
	}
	return c.cfg.Shared.Lock(ctx, fn)
}

// leader reports whether the CA rotates roots and JWT keys: always when alone.
func (c *CA) leader() bool { return c.cfg.Shared == nil || c.cfg.Shared.Leader() }

// start loads the stored authorities, or creates the first ones, and makes this server's own intermediate
// when it shares the store and has none.
func (c *CA) start(ctx context.Context) error {
	stored, err := c.store.ListAuthorities(ctx)
	if err != nil {
		return fmt.Errorf("list authorities: %w", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(stored) == 0 {
		return c.initAuthorities(ctx)
	}
	if err := c.load(ctx, stored); err != nil {
		return err
	}
	if err := c.ensureOwn(ctx); err != nil {
		return err
	}
	return c.startSwitch(ctx)
}

func fillConfig(cfg *Config) error {
	switch {
	case cfg.TrustDomain.IsZero():
		return errors.New("trust domain is required")
	case cfg.Shared != nil && (cfg.Shared.Lock == nil || cfg.Shared.Leader == nil):
		return errors.New("a shared ca needs a lock and a leader function")
	case cfg.Shared != nil && !ValidServerName(cfg.Shared.Name):
		return fmt.Errorf("server name %q is not 1 to 63 letters, digits, '.', '_' or '-'", cfg.Shared.Name)
	case cfg.Keys == nil:
		return errors.New("key manager is required")
	case cfg.Store == nil:
		return errors.New("authority store is required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&cfg.RootTTL, 365*24*time.Hour)
	def(&cfg.IntermediateTTL, 7*24*time.Hour)
	def(&cfg.X509SVIDTTL, time.Hour)
	def(&cfg.MaxX509SVIDTTL, 24*time.Hour)
	def(&cfg.MinSVIDTTL, time.Minute)
	def(&cfg.JWTSVIDTTL, 5*time.Minute)
	def(&cfg.MaxJWTSVIDTTL, time.Hour)
	def(&cfg.RootOverlap, 2*cfg.MaxX509SVIDTTL)
	def(&cfg.UpstreamRetryMax, 30*time.Second)
	if cfg.UpstreamName == "" {
		cfg.UpstreamName = "upstream"
	}
	if reflect.ValueOf(cfg.Subject).IsZero() {
		cfg.Subject = pkix.Name{Organization: []string{"Kith"}}
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"root ttl", cfg.RootTTL}, {"intermediate ttl", cfg.IntermediateTTL}, {"x509-svid ttl", cfg.X509SVIDTTL},
		{"max x509-svid ttl", cfg.MaxX509SVIDTTL}, {"min svid ttl", cfg.MinSVIDTTL}, {"jwt-svid ttl", cfg.JWTSVIDTTL},
		{"max jwt-svid ttl", cfg.MaxJWTSVIDTTL}, {"root overlap", cfg.RootOverlap}, {"upstream retry max", cfg.UpstreamRetryMax},
	} {
		if d.v < 0 {
			return fmt.Errorf("%s %s is negative", d.name, d.v)
		}
	}
	switch {
	case cfg.X509SVIDTTL < cfg.MinSVIDTTL || cfg.X509SVIDTTL > cfg.MaxX509SVIDTTL:
		return fmt.Errorf("x509-svid ttl %s is outside [%s, %s]", cfg.X509SVIDTTL, cfg.MinSVIDTTL, cfg.MaxX509SVIDTTL)
	case cfg.JWTSVIDTTL < cfg.MinSVIDTTL || cfg.JWTSVIDTTL > cfg.MaxJWTSVIDTTL:
		return fmt.Errorf("jwt-svid ttl %s is outside [%s, %s]", cfg.JWTSVIDTTL, cfg.MinSVIDTTL, cfg.MaxJWTSVIDTTL)
	case cfg.Upstream == nil && cfg.RootTTL <= cfg.RootOverlap+cfg.IntermediateTTL:
		return fmt.Errorf("root ttl %s must be longer than root overlap %s plus intermediate ttl %s",
			cfg.RootTTL, cfg.RootOverlap, cfg.IntermediateTTL)
	}
	return nil
}

// JWTIssuer returns the iss claim JWT-SVIDs carry ("" for none).
func (c *CA) JWTIssuer() string {
	if p := c.issuer.Load(); p != nil {
		return *p
	}
	return c.cfg.JWTIssuer
}

// SetJWTIssuer sets the iss claim of the JWT-SVIDs signed from now on, for a server that learns its
// advertised URL only once it has bound its port.
func (c *CA) SetJWTIssuer(iss string) { c.issuer.Store(&iss) }

// TrustDomain returns the trust domain the CA issues for.
func (c *CA) TrustDomain() spiffeid.TrustDomain { return c.td }

// Authorities returns copies of all known authorities, ordered by kind (root, intermediate, JWT) then
// NotBefore.
func (c *CA) Authorities() []Authority {
	st := c.state.Load()
	out := make([]Authority, len(st.auths))
	for i, a := range st.auths {
		out[i] = copyAuthority(a)
	}
	return out
}

// Subscribe returns a channel that receives a value whenever the authorities or the bundle change.
// Signals coalesce: the channel holds at most one. Call the returned func to unsubscribe.
func (c *CA) Subscribe() (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	c.subMu.Lock()
	c.subs[ch] = struct{}{}
	c.subMu.Unlock()
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			c.subMu.Lock()
			delete(c.subs, ch)
			c.subMu.Unlock()
		})
	}
}

func (c *CA) notify() {
	c.subMu.Lock()
	defer c.subMu.Unlock()
	for ch := range c.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

func copyAuthority(a Authority) Authority {
	a.CertDER = slices.Clone(a.CertDER)
	a.PublicKey = slices.Clone(a.PublicKey)
	return a
}

// initAuthorities creates the first root, intermediate and JWT key, all active. With an upstream authority
// the roots are the upstream's and the intermediate is minted by it.
func (c *CA) initAuthorities(ctx context.Context) error {
	ch := c.newChange(c.now())
	var root *authority
	if c.cfg.Upstream != nil {
		roots, err := c.upstream.X509Roots(ctx)
		if err != nil {
			return fmt.Errorf("upstream authority: roots: %w", err)
		}
		if err := ch.syncUpstreamRoots(roots); err != nil {
			return err
		}
	} else {
		var err error
		if root, err = ch.newRoot(ctx); err != nil {
			return ch.abort(ctx, err)
		}
		root = ch.activate(root)
	}
	inter, err := ch.newIntermediate(ctx, c.minter(root), c.owner)
	if err != nil {
		return ch.abort(ctx, err)
	}
	ch.activate(inter)
	jwt, err := ch.newJWT(ctx)
	if err != nil {
		return ch.abort(ctx, err)
	}
	ch.activate(jwt)
	return c.commit(ctx, ch, "system", "ca.init")
}

// load parses and checks the stored authorities and loads the keys of those that are not retired.
func (c *CA) load(ctx context.Context, stored []Authority) error {
	auths := make([]*authority, 0, len(stored))
	seen := make(map[string]bool, len(stored))
	for _, sa := range stored {
		if seen[sa.ID] {
			return fmt.Errorf("authority %s is stored twice", sa.ID)
		}
		seen[sa.ID] = true
		a := &authority{Authority: copyAuthority(sa)}
		switch a.Kind {
		case KindX509Root, KindX509Intermediate:
			certs, err := x509.ParseCertificates(a.CertDER)
			switch {
			case err != nil:
				return fmt.Errorf("parse certificate of %s authority %s: %w", a.Kind, a.ID, err)
			case len(certs) == 0 || a.Kind == KindX509Root && len(certs) > 1:
				return fmt.Errorf("parse certificate of %s authority %s: %d certificates", a.Kind, a.ID, len(certs))
			}
			a.cert, a.chain, a.pub = certs[0], certs[1:], certs[0].PublicKey
		case KindJWT:
			pub, err := x509.ParsePKIXPublicKey(a.PublicKey)
			if err != nil {
				return fmt.Errorf("parse public key of jwt authority %s: %w", a.ID, err)
			}
			if k, ok := pub.(*ecdsa.PublicKey); !ok || k.Curve != elliptic.P256() {
				return fmt.Errorf("jwt authority %s: public key is not ECDSA P-256", a.ID)
			}
			a.pub = pub
		default:
			return fmt.Errorf("authority %s has unknown kind %q", a.ID, a.Kind)
		}
		switch {
		case a.Kind == KindX509Root && a.KeyID == "" && a.State != StateRetired:
			// An upstream's root: no key here. Without an upstream configured the CA is switching back
			// to a root of its own (checkAuthorities says when that is allowed).
		case a.Kind == KindX509Intermediate && a.Owner != c.owner:
			// Another server's intermediate: that server signs with it, this one needs no key for it.
		case a.State == StatePrepared, a.State == StateActive:
			signer, err := c.keys.GetKey(ctx, a.KeyID)
			if err != nil {
				return fmt.Errorf("load key %q of %s authority %s (is the key directory the one this store was created with?): %w",
					a.KeyID, a.Kind, a.ID, err)
			}
			pk, ok := signer.Public().(interface{ Equal(crypto.PublicKey) bool })
			if !ok || !pk.Equal(a.pub) {
				return fmt.Errorf("key %q does not match %s authority %s", a.KeyID, a.Kind, a.ID)
			}
			a.signer = signer
		case a.State == StateRetired:
		default:
			return fmt.Errorf("authority %s has unknown state %q", a.ID, a.State)
		}
		auths = append(auths, a)
	}
	sortAuthorities(auths)
	if err := checkAuthorities(auths, c.cfg.Upstream != nil, c.owner, c.cfg.Shared != nil); err != nil {
		return err
	}
	c.auths = auths
	c.publish(c.now())
	return nil
}

// checkAuthorities checks the invariants the rotation logic relies on. With an upstream authority
// (upstream true) every root is the upstream's and there may be several; without, every root is the CA's
// own. Each owner has at most one active intermediate; owner (this CA's) has exactly one unless the store
// is shared (a server that has none yet makes one).
func checkAuthorities(auths []*authority, upstream bool, owner string, shared bool) error {
	byID := make(map[string]*authority, len(auths))
	for _, a := range auths {
		byID[a.ID] = a
	}
	count := func(kind AuthorityKind, st AuthorityState) int {
		n := 0
		for _, a := range auths {
			if a.Kind == kind && a.State == st {
				n++
			}
		}
		return n
	}
	// Several active roots are an upstream's (it may have several), or a switch between self-signed and
	// upstream in progress (see switching).
	upstreamRoots := slices.ContainsFunc(auths, func(a *authority) bool {
		return a.Kind == KindX509Root && a.State != StateRetired && a.KeyID == ""
	})
	for _, kind := range []AuthorityKind{KindX509Root, KindJWT} {
		if n := count(kind, StateActive); n != 1 && !(kind == KindX509Root && n > 1 && (upstream || upstreamRoots)) {
			return fmt.Errorf("found %d active %s authorities, want exactly 1", n, kind)
		}
	}
	activeInters := map[string]int{}
	signingRoots := map[*authority]bool{} // the roots active intermediates chain to
	for _, a := range auths {
		if a.Kind == KindX509Intermediate && a.State == StateActive {
			activeInters[a.Owner]++
			if r := byID[a.ParentID]; r != nil {
				signingRoots[r] = true
			}
		}
	}
	for o, n := range activeInters {
		if n > 1 {
			return fmt.Errorf("found %d active %s authorities of %s, want exactly 1", n, KindX509Intermediate, ownerName(o))
		}
	}
	if activeInters[owner] == 0 && !shared {
		return fmt.Errorf("found 0 active %s authorities, want exactly 1", KindX509Intermediate)
	}
	upstreamSigning := false // some active intermediate chains to an upstream's root
	for r := range signingRoots {
		upstreamSigning = upstreamSigning || r.KeyID == ""
	}
	for _, a := range auths {
		if a.Kind != KindX509Root || a.State == StateRetired {
			continue
		}
		switch {
		case upstream && a.KeyID != "" && !signingRoots[a]:
			return fmt.Errorf("root %s is the ca's own, but an upstream authority is configured: its roots replace the ca's", a.ID)
		case !upstream && a.KeyID == "" && !upstreamSigning:
			return fmt.Errorf("root %s came from an upstream authority, and none is configured", a.ID)
		}
	}
	if n := count(KindX509Root, StatePrepared); n > 1 {
		return fmt.Errorf("found %d prepared roots, want at most 1", n)
	}
	if n := count(KindJWT, StatePrepared); n > 1 {
		return fmt.Errorf("found %d prepared jwt keys, want at most 1", n)
	}
	for _, a := range auths {
		if a.Kind != KindX509Intermediate || a.State == StateRetired {
			continue
		}
		parent := byID[a.ParentID]
		switch {
		case parent == nil || parent.Kind != KindX509Root:
			return fmt.Errorf("intermediate %s: parent root %q not found", a.ID, a.ParentID)
		case upstream:
			// An upstream may have dropped the root; the CA keeps publishing it while this intermediate signs.
		case a.State == StateActive && parent.State != StateActive:
			return fmt.Errorf("active intermediate %s is signed by root %s, which is %s", a.ID, parent.ID, parent.State)
		case parent.State == StateRetired:
			return fmt.Errorf("prepared intermediate %s is signed by retired root %s", a.ID, parent.ID)
		}
		chain := append([]*x509.Certificate{a.cert}, a.chain...)
		for i := 0; i+1 < len(chain); i++ {
			if err := chain[i].CheckSignatureFrom(chain[i+1]); err != nil {
				return fmt.Errorf("intermediate %s: certificate %d of its chain is not signed by the next: %w", a.ID, i, err)
			}
		}
		if err := chain[len(chain)-1].CheckSignatureFrom(parent.cert); err != nil {
			return fmt.Errorf("intermediate %s is not signed by root %s: %w", a.ID, parent.ID, err)
		}
	}
	return nil
}

func kindOrder(k AuthorityKind) int {
	switch k {
	case KindX509Root:
		return 0
	case KindX509Intermediate:
		return 1
	default:
		return 2
	}
}

func sortAuthorities(auths []*authority) {
	slices.SortStableFunc(auths, func(a, b *authority) int {
		if d := kindOrder(a.Kind) - kindOrder(b.Kind); d != 0 {
			return d
		}
		if d := a.NotBefore.Compare(b.NotBefore); d != 0 {
			return d
		}
		if d := a.CreatedAt.Compare(b.CreatedAt); d != 0 {
			return d
		}
		if a.ID < b.ID {
			return -1
		} else if a.ID > b.ID {
			return 1
		}
		return 0
	})
}

// publish builds and stores the signing snapshot from c.auths. c.mu must be held.
func (c *CA) publish(now time.Time) {
	st := &state{}
	for _, a := range c.auths {
		st.auths = append(st.auths, a.Authority)
		if a.State != StateActive {
			continue
		}
		switch a.Kind {
		case KindX509Intermediate:
			if a.Owner != c.owner {
				continue
			}
			st.x509Cert, st.x509Signer = a.cert, a.signer
			st.x509Chain = append([]*x509.Certificate{a.cert}, a.chain...)
			st.x509NotAfter = chainNotAfter(st.x509Chain)
		case KindJWT:
			st.jwtKID, st.jwtSigner, st.jwtNotAfter = a.ID, a.signer, a.NotAfter
			st.jwtHeader = base64.RawURLEncoding.EncodeToString(
				fmt.Appendf(nil, `{"alg":"ES256","kid":%q,"typ":"JWT"}`, a.ID))
		}
	}
	if prev := c.state.Load(); st.x509Signer == nil && prev != nil && prev.x509Signer != nil && now.Before(prev.x509NotAfter) {
		// A server whose intermediate another server retired (a root switch it did not prepare for, or
		// the leader taking it for a server gone) keeps signing with it until it makes a new one.
		st.x509Cert, st.x509Chain, st.x509Signer, st.x509NotAfter = prev.x509Cert, prev.x509Chain, prev.x509Signer, prev.x509NotAfter
	}
	st.bundle = c.buildBundle(now)
	c.state.Store(st)
}

// ownerName names owner in messages.
func ownerName(owner string) string {
	if owner == "" {
		return "the ca"
	}
	return "server " + owner
}

// chainNotAfter is the earliest NotAfter of chain.
func chainNotAfter(chain []*x509.Certificate) time.Time {
	na := chain[0].NotAfter
	for _, c := range chain[1:] {
		if c.NotAfter.Before(na) {
			na = c.NotAfter
		}
	}
	return na
}
