package attestation

import (
	"strings"
	"testing"
)

func TestParseSelectorRefusesWhatCanNeverMatch(t *testing.T) {
	tests := []struct {
		in, wantErr string // wantErr "": accepted
	}{
		{"unix:uid:1000", ""},
		{"unix:gid:0", ""},
		{"unix:supplementary_gid:27", ""},
		{"unix:user:www-data", ""},
		{"unix:path:/usr/local/bin/server", ""},
		{"unix:sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", ""},
		{"join_token:name:node1", ""},
		{"unix:uid:abc", "as a decimal number"},
		{"unix:uid:-1", "as a decimal number"},
		{"unix:uid:01000", "as a decimal number"},
		{"unix:gid:4294967296", "as a decimal number"},
		{"unix:path:relative/bin", "as an absolute, clean path"},
		{"unix:path:/usr/bin/../bin/sleep", "as an absolute, clean path"},
		{"unix:path:/usr/bin/", "as an absolute, clean path"},
		{"unix:sha256:9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08", "64 lowercase hex digits"},
		{"unix:sha256:abc", "64 lowercase hex digits"},
		{"unix:colour:red", "unknown key"},
		{"nope:uid:1", "unknown type"},
		{"unix:user:" + strings.Repeat("u", 1025), "the value is 1025 bytes, at most 1024"},
	}
	for _, tt := range tests {
		_, err := ParseSelector(tt.in)
		switch {
		case tt.wantErr == "" && err != nil:
			t.Errorf("ParseSelector(%q) = %v, want it accepted", tt.in, err)
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("ParseSelector(%q) = %v, want an error saying %q", tt.in, err, tt.wantErr)
		}
	}
}
