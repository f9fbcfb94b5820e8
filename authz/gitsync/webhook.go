package gitsync

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
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

// MaxWebhookBody is the largest webhook body accepted (1 MiB); a larger one is refused before its
// signature is checked. Push events are a few KiB to a few hundred KiB, and the body only triggers a
// sync: a push whose event is larger is still picked up by polling.
const MaxWebhookBody = 1 << 20

// DefaultReplayWindow is how long a delivery is remembered, and how far a delivery's timestamp may be
// from now.
const DefaultReplayWindow = 10 * time.Minute

// deliveryHeaders name a delivery: GitHub, GitLab, and Standard Webhooks (webhook-id).
var deliveryHeaders = []string{"X-GitHub-Delivery", "X-Gitlab-Event-UUID", "Webhook-Id"}

// timestampHeaders carry a delivery's send time in Unix seconds (Standard Webhooks and a common variant).
var timestampHeaders = []string{"Webhook-Timestamp", "X-Webhook-Timestamp"}

// Replays remembers the webhook deliveries of the last window, to refuse one that is sent again. A
// delivery is known by its delivery ID header (X-GitHub-Delivery, X-Gitlab-Event-UUID, Webhook-Id) and
// by the digest of its body and signature, since the headers are not covered by the signature: a
// captured delivery replayed under a new ID is still recognised. It remembers at most maxRemembered
// deliveries (the oldest are forgotten first); only authenticated deliveries should be recorded.
type Replays struct {
	window time.Duration
	now    func() time.Time

	mu    sync.Mutex
	seen  map[string]time.Time // key -> first seen
	order []replayKey          // in the order seen, for expiry
}

type replayKey struct {
	key string
	at  time.Time
}

const maxRemembered = 100_000

// NewReplays returns a Replays remembering deliveries for window (zero: DefaultReplayWindow) by the clock
// now (zero: time.Now).
func NewReplays(window time.Duration, now func() time.Time) *Replays {
	if window <= 0 {
		window = DefaultReplayWindow
	}
	if now == nil {
		now = time.Now
	}
	return &Replays{window: window, now: now, seen: map[string]time.Time{}}
}

// Window is how long deliveries are remembered.
func (r *Replays) Window() time.Duration { return r.window }

// CheckTime refuses a delivery whose timestamp header (Webhook-Timestamp or X-Webhook-Timestamp, Unix
// seconds), if it has one, is more than the window away from now.
func (r *Replays) CheckTime(h http.Header) error {
	for _, name := range timestampHeaders {
		v := h.Get(name)
		if v == "" {
			continue
		}
		secs, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err != nil {
			return fmt.Errorf("%s %q is not a Unix time in seconds", name, v)
		}
		sent, now := time.Unix(secs, 0), r.now()
		if d := now.Sub(sent); d > r.window || d < -r.window {
			return fmt.Errorf("%s %s is more than %s from the server's time %s: refused as a possible replay (check the sender's clock)",
				name, sent.UTC().Format(time.RFC3339), r.window, now.UTC().Format(time.RFC3339))
		}
		return nil
	}
	return nil
}

// Record records the delivery with headers h and body and reports, when it was already received within
// the window, what it was known by and when it was first received.
func (r *Replays) Record(h http.Header, body []byte) (dup string, first time.Time, replayed bool) {
	d := sha256.New()
	d.Write(body)
	for _, name := range []string{"X-Hub-Signature-256", "X-Gitlab-Token"} {
		d.Write([]byte{0})
		d.Write([]byte(h.Get(name)))
	}
	keys := []string{"body:" + hex.EncodeToString(d.Sum(nil))}
	for _, name := range deliveryHeaders {
		if v := h.Get(name); v != "" {
			keys = append(keys, name+":"+v)
		}
	}
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.expire(now)
	for _, k := range keys {
		if at, ok := r.seen[k]; ok {
			name, id, _ := strings.Cut(k, ":")
			if name == "body" {
				return "the same body and signature", at, true
			}
			return fmt.Sprintf("%s %s", name, id), at, true
		}
	}
	for _, k := range keys {
		r.seen[k] = now
		r.order = append(r.order, replayKey{k, now})
	}
	for len(r.order) > maxRemembered {
		delete(r.seen, r.order[0].key)
		r.order = r.order[1:]
	}
	return "", time.Time{}, false
}

func (r *Replays) expire(now time.Time) {
	i := 0
	for i < len(r.order) && now.Sub(r.order[i].at) > r.window {
		delete(r.seen, r.order[i].key)
		i++
	}
	if i > 0 {
		r.order = append(r.order[:0:0], r.order[i:]...)
	}
}
