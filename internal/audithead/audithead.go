// Package audithead signs and verifies statements of the audit log's head (how many events, the hash of the
// last, when), the checkpoint the server keeps outside its database and `kith audit head` exports for
// witnessing.
package audithead

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	adminv1 "github.com/kithid/kith/api/kith/admin/v1"
)

// Statement is what a head's signature covers:
//
//	kith audit head v1\n<trust domain>\n<count>\n<hash hex>\n<time RFC 3339 nano, UTC>\n
func Statement(h *adminv1.AuditHead) []byte {
	return []byte("kith audit head v1\n" + h.GetTrustDomain() + "\n" + strconv.FormatInt(h.GetCount(), 10) + "\n" +
		hex.EncodeToString(h.GetHash()) + "\n" + h.GetTime().AsTime().UTC().Format(time.RFC3339Nano) + "\n")
}

// Sign sets h's signature (ECDSA with SHA-256 over Statement) made with signer.
func Sign(h *adminv1.AuditHead, signer crypto.Signer) error {
	sum := sha256.Sum256(Statement(h))
	sig, err := signer.Sign(rand.Reader, sum[:], crypto.SHA256)
	if err != nil {
		return fmt.Errorf("sign audit head: %w", err)
	}
	h.Signature = sig
	return nil
}

// Verify checks h's signature with the public key h carries. Whether that key is the expected one is the
// caller's question (compare PublicKey with a key known otherwise).
func Verify(h *adminv1.AuditHead) error {
	pub, err := x509.ParsePKIXPublicKey(h.GetPublicKey())
	if err != nil {
		return fmt.Errorf("audit head: public key: %w", err)
	}
	ec, ok := pub.(*ecdsa.PublicKey)
	if !ok {
		return fmt.Errorf("audit head: public key is %T, want ECDSA", pub)
	}
	sum := sha256.Sum256(Statement(h))
	if !ecdsa.VerifyASN1(ec, sum[:], h.GetSignature()) {
		return errors.New("audit head: the signature does not verify")
	}
	return nil
}

// Marshal encodes h as the checkpoint file and `kith audit head -o json` write it.
func Marshal(h *adminv1.AuditHead) ([]byte, error) {
	b, err := protojson.MarshalOptions{Multiline: true, UseProtoNames: true}.Marshal(h)
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// Parse reads a head from JSON text, or from the file it names when it does not start with '{'.
func Parse(fileOrJSON string) (*adminv1.AuditHead, error) {
	data := []byte(fileOrJSON)
	if !strings.HasPrefix(strings.TrimSpace(fileOrJSON), "{") {
		b, err := os.ReadFile(fileOrJSON)
		if err != nil {
			return nil, err
		}
		data = b
	}
	h := &adminv1.AuditHead{}
	if err := protojson.Unmarshal(data, h); err != nil {
		return nil, fmt.Errorf("not an audit head (the output of kith audit head -o json): %w", err)
	}
	if h.GetCount() <= 0 || len(h.GetHash()) != sha256.Size {
		return nil, errors.New("not an audit head: it needs a count above 0 and a 32-byte hash")
	}
	return h, nil
}

// KeyFingerprint is the SHA-256 (hex) of a head's public key, for people comparing keys.
func KeyFingerprint(h *adminv1.AuditHead) string {
	sum := sha256.Sum256(h.GetPublicKey())
	return hex.EncodeToString(sum[:])
}
