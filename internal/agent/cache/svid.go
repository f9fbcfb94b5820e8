package cache

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// SVID is an X.509-SVID as the agent holds it: the certificates and the key as DER, and the few fields the
// agent reads (SPIFFE ID, validity). Ten thousand of them stay small (about a kilobyte each, where parsed
// certificates and keys take several), and a Workload API or SDS response needs no encoding work. The
// intermediates are shared between the SVIDs the same CA signed. An SVID is immutable.
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
	leaf, err := x509.ParseCertificate(chain[0])
	if err != nil {
		return nil, fmt.Errorf("parse certificate: %w", err)
	}
	got, err := x509svid.IDFromCert(leaf)
	if err != nil {
		return nil, fmt.Errorf("certificate: %w", err)
	}
	if got != id {
		return nil, fmt.Errorf("certificate is for %s, want %s", got, id)
	}
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(leaf.PublicKey) {
		return nil, errors.New("certificate does not carry the public key of the private key it was requested for")
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode private key: %w", err)
	}
	inter := bytes.Join(chain[1:], nil)
	if err := checkIntermediates(inter); err != nil {
		return nil, err
	}
	return &SVID{
		ID:            id,
		Leaf:          bytes.Clone(chain[0]),
		Intermediates: inter,
		Key:           keyDER,
		NotBefore:     leaf.NotBefore,
		NotAfter:      leaf.NotAfter,
	}, nil
}

// checked is the last set of intermediates that parsed: thousands of SVIDs from one CA share it.
var checked atomic.Pointer[[]byte]

// checkIntermediates reports whether concatenated DER certificates parse.
func checkIntermediates(der []byte) error {
	if last := checked.Load(); last != nil && bytes.Equal(*last, der) {
		return nil
	}
	if _, err := x509.ParseCertificates(der); err != nil {
		return fmt.Errorf("parse intermediate certificate: %w", err)
	}
	checked.Store(&der)
	return nil
}

// ParseSVID reads an SVID from concatenated DER certificates (leaf first) and a PKCS #8 DER key, as
// SVID.Chain and SVID.Key give them.
func ParseSVID(chain, key []byte) (*SVID, error) {
	s, err := x509svid.ParseRaw(chain, key)
	if err != nil {
		return nil, err
	}
	return FromX509SVID(s)
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
