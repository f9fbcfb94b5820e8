package config

import (
	"testing"
	"time"
)

func TestParseDuration(t *testing.T) {
	tests := []struct {
		in      string
		want    time.Duration
		wantErr bool
	}{
		{in: "90s", want: 90 * time.Second},
		{in: "1h30m", want: 90 * time.Minute},
		{in: "7d", want: 7 * 24 * time.Hour},
		{in: "1d12h", want: 36 * time.Hour},
		{in: "0d", want: 0},
		{in: "0", want: 0},
		{in: "-5m", want: -5 * time.Minute},
		{in: "-1d12h", want: -36 * time.Hour},
		{in: " 2d ", want: 48 * time.Hour},
		{in: "", wantErr: true},
		{in: "d", wantErr: true},
		{in: "1d-2h", wantErr: true},
		{in: "--5m", wantErr: true},
		{in: "1x", wantErr: true},
		{in: "abcd", wantErr: true},
		{in: "1dd", wantErr: true},
		{in: "999999999999d", wantErr: true},
		{in: "106751d", want: 106751 * 24 * time.Hour},
		{in: "106752d", wantErr: true},
		{in: "106751d24h", wantErr: true},
	}
	for _, tt := range tests {
		got, err := ParseDuration(tt.in)
		if tt.wantErr {
			if err == nil {
				t.Errorf("ParseDuration(%q) = %s, want an error", tt.in, got)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseDuration(%q) = %s, %v; want %s", tt.in, got, err, tt.want)
		}
	}
}
