package console

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Lifetimes of console logins.
const (
	// LoginLinkTTL is how long a one-time login link may wait to be opened.
	LoginLinkTTL = time.Minute
	// SessionTTL is how long a console session lasts; every change it makes is authorized again, so a
	// user disabled meanwhile can change nothing.
	SessionTTL = 8 * time.Hour
	// maxSessions bounds the sessions and pending links kept; the oldest go first.
	maxSessions = 10_000
	cookieName  = "kith_console"
	csrfHeader  = "X-Kith-CSRF"
)

// Sessions are the console's logins: one-time links made for a logged-in user (Issue, through the admin
// API's CreateConsoleLogin) and the sessions opened with them. Kept in memory: a restart signs everyone
// out.
type Sessions struct {
	now func() time.Time

	mu       sync.Mutex
	links    map[string]pending  // link token → who
	sessions map[string]*session // session ID (the cookie) → session
}

type pending struct {
	user    spiffeid.ID
	expires time.Time
}

type session struct {
	user    spiffeid.ID
	csrf    string
	expires time.Time
}

// NewSessions makes an empty set of logins; now may be nil for time.Now.
func NewSessions(now func() time.Time) *Sessions {
	if now == nil {
		now = time.Now
	}
	return &Sessions{now: now, links: map[string]pending{}, sessions: map[string]*session{}}
}

func randomToken() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// Issue makes a one-time login link token for user, valid for LoginLinkTTL.
func (s *Sessions) Issue(user spiffeid.ID) (token string, expires time.Time, err error) {
	if user.IsZero() {
		return "", time.Time{}, errors.New("console login: no user")
	}
	token, err = randomToken()
	if err != nil {
		return "", time.Time{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sweep()
	expires = s.now().Add(LoginLinkTTL)
	s.links[token] = pending{user: user, expires: expires}
	return token, expires, nil
}

// open consumes a link token and starts a session: its ID (the cookie) and the session.
func (s *Sessions) open(token string) (string, *session, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.links[token]
	delete(s.links, token)
	if !ok || !s.now().Before(p.expires) {
		return "", nil, errors.New("this console login link is unknown, used or expired: run kith console again")
	}
	id, err := randomToken()
	if err != nil {
		return "", nil, err
	}
	csrf, err := randomToken()
	if err != nil {
		return "", nil, err
	}
	s.sweep()
	ss := &session{user: p.user, csrf: csrf, expires: s.now().Add(SessionTTL)}
	s.sessions[id] = ss
	return id, ss, nil
}

// of returns the session of r's cookie, if it is live.
func (s *Sessions) of(r *http.Request) (string, *session, bool) {
	if s == nil {
		return "", nil, false
	}
	c, err := r.Cookie(cookieName)
	if err != nil {
		return "", nil, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ss, ok := s.sessions[c.Value]
	if !ok || !s.now().Before(ss.expires) {
		return "", nil, false
	}
	return c.Value, ss, true
}

// close ends session id.
func (s *Sessions) close(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.sessions, id)
}

// sweep drops expired links and sessions, and the oldest past maxSessions. s.mu must be held.
func (s *Sessions) sweep() {
	now := s.now()
	for k, p := range s.links {
		if !now.Before(p.expires) {
			delete(s.links, k)
		}
	}
	for k, ss := range s.sessions {
		if !now.Before(ss.expires) {
			delete(s.sessions, k)
		}
	}
	for len(s.sessions)+len(s.links) >= maxSessions {
		oldest, at := "", time.Time{}
		for k, ss := range s.sessions {
			if oldest == "" || ss.expires.Before(at) {
				oldest, at = k, ss.expires
			}
		}
		if oldest == "" {
			for k := range s.links {
				delete(s.links, k)
				break
			}
			continue
		}
		delete(s.sessions, oldest)
	}
}

// csrfOK reports whether r carries the session's CSRF token and comes from the console's own origin.
func csrfOK(r *http.Request, ss *session) bool {
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" {
		return false
	}
	if o := r.Header.Get("Origin"); o != "" && o != "http://"+r.Host && o != "https://"+r.Host {
		return false
	}
	got := r.Header.Get(csrfHeader)
	return got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(ss.csrf)) == 1
}
