// Package ca is Kith's certificate authority: it issues X.509-SVIDs and JWT-SVIDs for one SPIFFE trust
// domain and rotates its own keys.
//
// A CA holds three kinds of [Authority]: self-signed roots (what relying parties trust), signing
// intermediates (what X.509-SVIDs chain to) and JWT signing keys. Each is prepared, then active, then
// retired. Prepared roots and JWT keys are published in the trust bundle before they sign, so relying
// parties already hold them when the switch happens; retired ones stay published until everything they
// signed has expired.
//
// The life of an intermediate and of a JWT key (Config.IntermediateTTL, 7 days by default):
//
//   - at 50 % of its life the next one is prepared (signed by the active root; a JWT key is published);
//   - at 5/6 of its life the prepared one is activated and the old one retired.
//
// Roots rotate when [CA.Rotate] is called with root set, or automatically when the active root has less
// than max(RootOverlap+IntermediateTTL, 1/6 of its life) left: a new root and an intermediate signed by it
// are prepared, the new root is published at once and signing moves to it RootOverlap later. The old root
// stays in the bundle until MaxX509SVIDTTL after it retired.
//
// Time-based transitions happen in [CA.Tick]; [CA.Run] calls it whenever one is due. Every transition is
// persisted through the [AuthorityStore] before the in-memory state changes, and subscribers
// ([CA.Subscribe]) are told.
//
// The bundle's sequence number is the largest authority timestamp (CreatedAt, ActivatedAt, RetiredAt, or
// the moment a retired authority left the bundle) in Unix nanoseconds. Transition timestamps are kept
// strictly increasing, so the sequence number grows with every change, also across restarts.
//
// A CA configured with an [UpstreamAuthority] (Config.Upstream: Vault PKI, step-ca, a CA on disk) holds no
// root of its own: the upstream mints each intermediate from a CSR and names the roots the bundle
// publishes, and X.509-SVID chains carry the upstream's intermediates after the CA's. Without one, the CA's
// self-signed root mints the intermediates through the same contract.
//
// Issuance runs an ordered list of small steps over one request, as smallstep's sign options do: each
// checks one thing (SPIFFE ID in the trust domain, TTL bounds, DNS names, CSR signature, key type and
// size, URI SAN, audience) or sets one part of what is signed (TTL cap at the signing CA's NotAfter, key
// usage, subject).
//
// Signing is lock-free: SignX509SVID and SignJWTSVID read an immutable snapshot of the active keys through
// an atomic pointer.
package ca
