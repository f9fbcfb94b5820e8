package cache

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// SVID is an X.509-SVID as the agent holds it: the certificates and the key as DER, and the few fields the
// agent reads (SPIFFE ID, validity). Ten thousand of them stay small (about a kilobyte each, where parsed
// certificates and keys take several), and a Workload API or SDS response needs no encoding work. The
// intermediates are one copy shared by the SVIDs the same CA signed. An SVID is immutable.
type SVID struct {
	ID spiffeid.ID
	// Leaf is the SVID's certificate, DER.
	Leaf []byte
	// Intermediates are the CA certificates that follow the leaf, concatenated DER.
	Intermediates []byte
	// Key is the SVID's private key, PKCS #8 DER.
	Key       []byte
	NotBefore time.Time
	NotAfter  time.Time
}

// NewSVID checks a certificate chain (DER, leaf first) issued for id with key, and returns it as an SVID.
// The leaf must carry id as its URI SAN and key's public key. The chain is copied: it may alias a larger
// buffer, such as a gRPC message.
func NewSVID(id spiffeid.ID, chain [][]byte, key crypto.Signer) (*SVID, error) {
	if len(chain) == 0 {
		return nil, errors.New("empty certificate chain")
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode private key: %w", err)
	}
	return newSVID(id, chain[0], chain[1:], key.Public(), keyDER)
}

// newSVID checks the leaf (its SPIFFE ID is want, unless want is zero, and it carries pub) and makes the
// SVID, sharing the intermediates.
func newSVID(want spiffeid.ID, leafDER []byte, inter [][]byte, pub crypto.PublicKey, keyDER []byte) (*SVID, error) {
	leaf, err := x509.ParseCertificate(leafDER)
	if err != nil {
		return nil, fmt.Errorf("parse certificate: %w", err)
	}
	id, err := x509svid.IDFromCert(leaf)
	if err != nil {
		return nil, fmt.Errorf("certificate: %w", err)
	}
	if !want.IsZero() && id != want {
		return nil, fmt.Errorf("certificate is for %s, want %s", id, want)
	}
	if k, ok := pub.(interface{ Equal(crypto.PublicKey) bool }); !ok || !k.Equal(leaf.PublicKey) {
		return nil, errors.New("certificate does not carry the public key of the private key it was requested for")
	}
	shared, err := sharedIntermediates(inter)
	if err != nil {
		return nil, err
	}
	return &SVID{
		ID:            id,
		Leaf:          bytes.Clone(leafDER),
		Intermediates: shared,
		Key:           keyDER,
		NotBefore:     leaf.NotBefore,
		NotAfter:      leaf.NotAfter,
	}, nil
}

// intermediates are the CA certificates SVIDs were issued under (concatenated DER), by their DER: the
// SVIDs one CA issued share one copy, checked once. CAs rotate, so the table is emptied when it grows.
var intermediates struct {
	sync.Mutex
	m map[string][]byte
}

// sharedIntermediates returns the one copy of the concatenated certificates, checking that they parse
// the first time.
func sharedIntermediates(certs [][]byte) ([]byte, error) {
	if len(certs) == 0 {
		return nil, nil
	}
	der := certs[0]
	if len(certs) > 1 {
		der = bytes.Join(certs, nil)
	}
	if len(der) == 0 {
		return nil, nil
	}
	intermediates.Lock()
	shared, ok := intermediates.m[string(der)]
	intermediates.Unlock()
	if ok {
		return shared, nil
	}
	if _, err := x509.ParseCertificates(der); err != nil {
		return nil, fmt.Errorf("parse intermediate certificate: %w", err)
	}
	shared = bytes.Clone(der)
	intermediates.Lock()
	defer intermediates.Unlock()
	if intermediates.m == nil || len(intermediates.m) >= 16 {
		intermediates.m = map[string][]byte{}
	}
	intermediates.m[string(shared)] = shared
	return shared, nil
}

// ParseSVID reads an SVID from concatenated DER certificates (leaf first) and a PKCS #8 DER key, as
// SVID.Chain and SVID.Key give them.
func ParseSVID(chain, key []byte) (*SVID, error) {
	n := derLen(chain)
	if n <= 0 || n > len(chain) {
		return nil, errors.New("certificate chain is not DER")
	}
	k, err := x509.ParsePKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("parse private key: %w", err)
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("private key is %T, not a signing key", k)
	}
	return newSVID(spiffeid.ID{}, chain[:n], [][]byte{chain[n:]}, signer.Public(), bytes.Clone(key))
}

// FromX509SVID converts a parsed SVID.
func FromX509SVID(s *x509svid.SVID) (*SVID, error) {
	ders := make([][]byte, len(s.Certificates))
	for i, c := range s.Certificates {
		ders[i] = c.Raw
	}
	return NewSVID(s.ID, ders, s.PrivateKey)
}

// Chain returns the leaf and the intermediates as concatenated DER (a new slice).
func (s *SVID) Chain() []byte {
	out := make([]byte, 0, len(s.Leaf)+len(s.Intermediates))
	return append(append(out, s.Leaf...), s.Intermediates...)
}

// ChainPEM returns the leaf and the intermediates as PEM CERTIFICATE blocks.
func (s *SVID) ChainPEM() []byte {
	var buf bytes.Buffer
	pemBlock(&buf, "CERTIFICATE", s.Leaf)
	rest := s.Intermediates
	for len(rest) > 0 {
		n := derLen(rest)
		if n <= 0 || n > len(rest) {
			break // checked when the SVID was made; not reached
		}
		pemBlock(&buf, "CERTIFICATE", rest[:n])
		rest = rest[n:]
	}
	return buf.Bytes()
}

// KeyPEM returns the private key as a PEM PRIVATE KEY block.
func (s *SVID) KeyPEM() []byte {
	var buf bytes.Buffer
	pemBlock(&buf, "PRIVATE KEY", s.Key)
	return buf.Bytes()
}

// X509SVID parses the SVID into go-spiffe's form.
func (s *SVID) X509SVID() (*x509svid.SVID, error) {
	return x509svid.ParseRaw(s.Chain(), s.Key)
}

func pemBlock(buf *bytes.Buffer, typ string, der []byte) {
	_ = pem.Encode(buf, &pem.Block{Type: typ, Bytes: der}) // writing to a bytes.Buffer does not fail
}

// derLen returns the length of the DER element at the start of b (tag, length and contents), or -1.
func derLen(b []byte) int {
	if len(b) < 2 {
		return -1
	}
	l := int(b[1])
	if l < 0x80 {
		return 2 + l
	}
	n := l & 0x7f
	if n == 0 || n > 4 || len(b) < 2+n {
		return -1
	}
	l = 0
	for _, c := range b[2 : 2+n] {
		l = l<<8 | int(c)
	}
	return 2 + n + l
}
