package ca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// NewKeyAndCSR makes a P-256 key and a PKCS#10 request for it, naming id as its URI SAN when id is not
// zero. Callers that want an SVID (the agent, the CLI, the server for itself) keep the key and send the
// CSR, so private keys never travel.
//
// The request is assembled here rather than with x509.CreateCertificateRequest, which verifies every
// signature it has just made: an agent making ten thousand SVIDs would spend a third of its CPU on that.
func NewKeyAndCSR(id spiffeid.ID) (*ecdsa.PrivateKey, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate key: %w", err)
	}
	csr, err := createCSR(key, id)
	if err != nil {
		return nil, nil, fmt.Errorf("create csr: %w", err)
	}
	return key, csr, nil
}

var (
	oidExtensionRequest     = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 14}
	oidSubjectAltName       = asn1.ObjectIdentifier{2, 5, 29, 17}
	oidSignatureECDSASHA256 = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}
)

// The PKCS #10 structures (RFC 2986), with the extensionRequest attribute of RFC 2985.
type (
	csrExtension struct {
		ID    asn1.ObjectIdentifier
		Value []byte
	}
	csrAttribute struct {
		Type   asn1.ObjectIdentifier
		Values [][]csrExtension `asn1:"set"`
	}
	csrInfo struct {
		Version    int
		Subject    asn1.RawValue
		PublicKey  asn1.RawValue
		Attributes []csrAttribute `asn1:"tag:0"`
	}
	csrEnvelope struct {
		Info      asn1.RawValue
		Algorithm pkix.AlgorithmIdentifier
		Signature asn1.BitString
	}
)

func createCSR(key *ecdsa.PrivateKey, id spiffeid.ID) ([]byte, error) {
	spki, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return nil, err
	}
	info := csrInfo{
		Subject:    asn1.RawValue{FullBytes: []byte{0x30, 0}}, // empty name
		PublicKey:  asn1.RawValue{FullBytes: spki},
		Attributes: []csrAttribute{},
	}
	if !id.IsZero() {
		san, err := asn1.Marshal([]asn1.RawValue{{Class: asn1.ClassContextSpecific, Tag: 6, Bytes: []byte(id.String())}})
		if err != nil {
			return nil, err
		}
		info.Attributes = append(info.Attributes, csrAttribute{
			Type:   oidExtensionRequest,
			Values: [][]csrExtension{{{ID: oidSubjectAltName, Value: san}}},
		})
	}
	tbs, err := asn1.Marshal(info)
	if err != nil {
		return nil, err
	}
	digest := sha256.Sum256(tbs)
	sig, err := ecdsa.SignASN1(rand.Reader, key, digest[:])
	if err != nil {
		return nil, err
	}
	return asn1.Marshal(csrEnvelope{
		Info:      asn1.RawValue{FullBytes: tbs},
		Algorithm: pkix.AlgorithmIdentifier{Algorithm: oidSignatureECDSASHA256},
		Signature: asn1.BitString{Bytes: sig, BitLength: 8 * len(sig)},
	})
}
