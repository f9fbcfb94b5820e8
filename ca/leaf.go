package ca

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"math/bits"
	"net/url"
	"sync"
	"time"
)

// createLeaf encodes and signs an X.509-SVID (a leaf certificate) with the intermediate parent and its key
// signer, which is always ECDSA P-256 here. The encoding is exactly what x509.CreateCertificate makes for
// the same fields (tested byte for byte). x509.CreateCertificate also verifies every signature it makes,
// to catch a faulty signer; that is a third of the cost of an SVID. A key held in this process
// (*ecdsa.PrivateKey, from the disk and memory key managers) signs with the standard library, so its first
// signature is verified, which catches a key that does not match; any other signer (a hardware or remote
// key) has every signature verified, as x509.CreateCertificate would.
func createLeaf(l leafFields, parent *x509.Certificate, signer crypto.Signer) ([]byte, error) {
	if pub, ok := signer.Public().(*ecdsa.PublicKey); !ok || pub.Curve != elliptic.P256() {
		return nil, fmt.Errorf("signing key is %T, want ECDSA P-256", signer.Public())
	}
	spki, err := x509.MarshalPKIXPublicKey(l.publicKey)
	if err != nil {
		return nil, fmt.Errorf("marshal public key: %w", err)
	}
	exts, err := l.extensions(parent)
	if err != nil {
		return nil, err
	}
	tbs, err := asn1.Marshal(tbsCertificate{
		Version:            2,
		SerialNumber:       l.serial,
		SignatureAlgorithm: ecdsaSHA256,
		Issuer:             asn1.RawValue{FullBytes: parent.RawSubject},
		Validity:           validity{l.notBefore.UTC(), l.notAfter.UTC()},
		Subject:            asn1.RawValue{FullBytes: l.subject},
		PublicKey:          asn1.RawValue{FullBytes: spki},
		Extensions:         exts,
	})
	if err != nil {
		return nil, fmt.Errorf("marshal certificate: %w", err)
	}
	digest := sha256.Sum256(tbs)
	sig, err := signer.Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("sign certificate: %w", err)
	}
	if err := checkFirstSignature(signer, digest[:], sig); err != nil {
		return nil, err
	}
	return asn1.Marshal(certificate{
		TBS:                asn1.RawValue{FullBytes: tbs},
		SignatureAlgorithm: ecdsaSHA256,
		Signature:          asn1.BitString{Bytes: sig, BitLength: 8 * len(sig)},
	})
}

// leafFields are the parts of an X.509-SVID that vary.
type leafFields struct {
	serial              *big.Int
	notBefore, notAfter time.Time
	subject             []byte // DER Name
	publicKey           crypto.PublicKey
	keyUsage            x509.KeyUsage
	uri                 *url.URL
	dnsNames            []string
}

var (
	oidKeyUsage         = asn1.ObjectIdentifier{2, 5, 29, 15}
	oidExtKeyUsage      = asn1.ObjectIdentifier{2, 5, 29, 37}
	oidBasicConstraints = asn1.ObjectIdentifier{2, 5, 29, 19}
	oidAuthorityKeyID   = asn1.ObjectIdentifier{2, 5, 29, 35}
	oidServerAuth       = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 1}
	oidClientAuth       = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 2}
	ecdsaSHA256         = pkix.AlgorithmIdentifier{Algorithm: oidSignatureECDSASHA256}
	emptyName           = []byte{0x30, 0}
	// Constant extension values of every SVID: TLS server and client use; not a CA.
	svidExtKeyUsageDER    = mustMarshal([]asn1.ObjectIdentifier{oidServerAuth, oidClientAuth})
	notACABasicConstraint = mustMarshal(struct{}{})
)

func mustMarshal(v any) []byte {
	b, err := asn1.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// extensions returns the extensions in x509.CreateCertificate's order.
func (l leafFields) extensions(parent *x509.Certificate) ([]pkix.Extension, error) {
	ku, err := keyUsageDER(l.keyUsage)
	if err != nil {
		return nil, err
	}
	exts := []pkix.Extension{
		{Id: oidKeyUsage, Critical: true, Value: ku},
		{Id: oidExtKeyUsage, Value: svidExtKeyUsageDER},
		{Id: oidBasicConstraints, Critical: true, Value: notACABasicConstraint},
	}
	if len(parent.SubjectKeyId) > 0 && !bytes.Equal(parent.RawSubject, l.subject) {
		aki, err := asn1.Marshal(struct {
			ID []byte `asn1:"optional,tag:0"`
		}{parent.SubjectKeyId})
		if err != nil {
			return nil, fmt.Errorf("marshal authority key id: %w", err)
		}
		exts = append(exts, pkix.Extension{Id: oidAuthorityKeyID, Value: aki})
	}
	names := make([]asn1.RawValue, 0, len(l.dnsNames)+1)
	for _, n := range l.dnsNames {
		names = append(names, asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 2, Bytes: []byte(n)})
	}
	names = append(names, asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 6, Bytes: []byte(l.uri.String())})
	san, err := asn1.Marshal(names)
	if err != nil {
		return nil, fmt.Errorf("marshal subject alternative names: %w", err)
	}
	// With an empty subject the names are all there is, and RFC 5280 makes them critical.
	return append(exts, pkix.Extension{Id: oidSubjectAltName, Critical: bytes.Equal(l.subject, emptyName), Value: san}), nil
}

// keyUsageDER encodes key usage bits as the BIT STRING of RFC 5280 (bit 0 first, no trailing zero bits).
func keyUsageDER(ku x509.KeyUsage) ([]byte, error) {
	if ku <= 0 || ku >= 1<<9 {
		return nil, errors.New("key usage out of range")
	}
	b := []byte{bits.Reverse8(byte(ku)), bits.Reverse8(byte(ku >> 8))}
	if b[1] == 0 {
		b = b[:1]
	}
	last := b[len(b)-1]
	return asn1.Marshal(asn1.BitString{Bytes: b, BitLength: 8*len(b) - bits.TrailingZeros8(last)})
}

type tbsCertificate struct {
	Version            int `asn1:"optional,explicit,default:0,tag:0"`
	SerialNumber       *big.Int
	SignatureAlgorithm pkix.AlgorithmIdentifier
	Issuer             asn1.RawValue
	Validity           validity
	Subject            asn1.RawValue
	PublicKey          asn1.RawValue
	Extensions         []pkix.Extension `asn1:"omitempty,optional,explicit,tag:3"`
}

type validity struct {
	NotBefore, NotAfter time.Time
}

type certificate struct {
	TBS                asn1.RawValue
	SignatureAlgorithm pkix.AlgorithmIdentifier
	Signature          asn1.BitString
}

// verifiedSigners are the in-process keys whose first signature was checked.
var verifiedSigners sync.Map // string(public key) → struct{}

func checkFirstSignature(signer crypto.Signer, digest, sig []byte) error {
	pub := signer.Public().(*ecdsa.PublicKey)
	_, inProcess := signer.(*ecdsa.PrivateKey)
	key, err := pub.Bytes()
	if err != nil {
		return fmt.Errorf("signing key: %w", err)
	}
	if _, ok := verifiedSigners.Load(string(key)); ok && inProcess {
		return nil
	}
	if !ecdsa.VerifyASN1(pub, digest, sig) {
		return errors.New("the signing key made a signature that does not verify: check the key manager")
	}
	if inProcess {
		verifiedSigners.Store(string(key), struct{}{})
	}
	return nil
}
