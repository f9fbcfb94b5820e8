package logclip

import "testing"

func TestCut(t *testing.T) {
	tests := []struct {
		name, in string
		max      int
		want     string
	}{
		{name: "short strings stay", in: "abc", max: 3, want: "abc"},
		{name: "long strings are cut and marked", in: "abcdef", max: 3, want: "abc…"},
		{name: "a multi-byte rune is not split", in: "aé", max: 2, want: "a…"},
		{name: "empty", in: "", max: 0, want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Cut(tt.in, tt.max); got != tt.want {
				t.Errorf("Cut(%q, %d) = %q, want %q", tt.in, tt.max, got, tt.want)
			}
		})
	}
}
