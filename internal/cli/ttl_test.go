package cli

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// The lifetime an entry gets: whole seconds within the server's svid.min_ttl (1m) to svid.max_x509_ttl
// (24h), or the server's default when none is given. --ttl 1ns used to be cut to 0 and become the default
// while 30s was refused; both are refused now, each with what to give instead.
func TestEntryTTLIsCheckedTheSameWayEverywhere(t *testing.T) {
	s := startServer(t, t.TempDir())
	tests := []struct {
		name    string
		args    []string
		code    int
		msg     string // part of stderr
		x509TTL int64  // seconds the entry holds, when created
		jwtTTL  int64
		entry   bool
	}{
		{"no ttl: the server's default", nil, 0, "", 0, 0, true},
		{"90s", []string{"--ttl", "90s"}, 0, "", 90, 0, true},
		{"a day", []string{"--ttl", "1d"}, 0, "", 86400, 0, true},
		{"1ns is not whole seconds", []string{"--ttl", "1ns"}, 2, "a lifetime is a whole number of seconds", 0, 0, false},
		{"90.5s is not whole seconds", []string{"--ttl", "90.5s"}, 2, "a lifetime is a whole number of seconds", 0, 0, false},
		{"30s is under svid.min_ttl", []string{"--ttl", "30s"}, 1, "x509 ttl 30s is outside the allowed range 1m0s to 24h0m0s", 0, 0, false},
		{"25h is over svid.max_x509_ttl", []string{"--ttl", "25h"}, 1, "x509 ttl 25h0m0s is outside the allowed range 1m0s to 24h0m0s", 0, 0, false},
		{"a jwt ttl of 1ns", []string{"--jwt-ttl", "1ns"}, 2, "a lifetime is a whole number of seconds", 0, 0, false},
		{"a jwt ttl of 5m", []string{"--jwt-ttl", "5m"}, 0, "", 0, 300, true},
		{"a negative ttl", []string{"--ttl=-1m"}, 2, "a lifetime is a whole number of seconds", 0, 0, false},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"entry", "create", "--spiffe-id", "spiffe://example.org/ttl/" + string(rune('a'+i)),
				"--node-selector", "join_token:name:n1", "--selector", "unix:uid:1000", "-o", "json"}, tt.args...)
			out, errs, code := s.kith(t, args...)
			if code != tt.code || !strings.Contains(errs, tt.msg) {
				t.Fatalf("kith %s: exit %d, stderr %q; want exit %d with %q", strings.Join(tt.args, " "), code, errs, tt.code, tt.msg)
			}
			if !tt.entry {
				return
			}
			var e struct {
				X509 int64 `json:"x509_ttl_seconds,string"`
				JWT  int64 `json:"jwt_ttl_seconds,string"`
			}
			if err := json.Unmarshal([]byte(out), &e); err != nil {
				t.Fatalf("decode %q: %v", out, err)
			}
			if diff := cmp.Diff([2]int64{tt.x509TTL, tt.jwtTTL}, [2]int64{e.X509, e.JWT}); diff != "" {
				t.Errorf("entry ttls (x509, jwt) (-want +got):\n%s", diff)
			}
		})
	}
	t.Run("a minted svid takes the same check", func(t *testing.T) {
		key := t.TempDir() + "/k.pem"
		for _, tc := range []struct {
			ttl  string
			code int
			msg  string
		}{
			{"1ns", 2, "a lifetime is a whole number of seconds"},
			{"30s", 1, "ttl 30s is outside the allowed range 1m0s to 24h0m0s"},
		} {
			_, errs, code := s.kith(t, "svid", "mint", "x509", "--spiffe-id", "spiffe://example.org/ttl/minted", "--ttl", tc.ttl, "--out-key", key)
			if code != tc.code || !strings.Contains(errs, tc.msg) {
				t.Errorf("svid x509 --ttl %s: exit %d, %q; want exit %d with %q", tc.ttl, code, errs, tc.code, tc.msg)
			}
		}
	})
}
