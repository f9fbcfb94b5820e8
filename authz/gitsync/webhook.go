package gitsync

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"net/http"
	"strings"
)

// VerifyWebhook reports whether a webhook request is authenticated by secret: GitHub's
// X-Hub-Signature-256 ("sha256=" + hex HMAC-SHA256 of the body) or GitLab's X-Gitlab-Token (the secret
// itself). Comparisons are constant-time. An empty secret authenticates nothing.
func VerifyWebhook(secret string, h http.Header, body []byte) bool {
	if secret == "" {
		return false
	}
	if sig := h.Get("X-Hub-Signature-256"); sig != "" {
		got, err := hex.DecodeString(strings.TrimPrefix(sig, "sha256="))
		if err != nil || !strings.HasPrefix(sig, "sha256=") {
			return false
		}
		mac := hmac.New(sha256.New, []byte(secret))
		mac.Write(body)
		return hmac.Equal(got, mac.Sum(nil))
	}
	if tok := h.Get("X-Gitlab-Token"); tok != "" {
		return subtle.ConstantTimeCompare([]byte(tok), []byte(secret)) == 1
	}
	return false
}
