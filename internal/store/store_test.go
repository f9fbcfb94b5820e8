package store

import "testing"

func TestHistoryLostBelow(t *testing.T) {
	history := func(id string) Change { return Change{Revision: 9, Kind: KindHistory, ID: id} }
	entry := Change{Revision: 8, Kind: KindEntry, ID: "7"}
	for _, tc := range []struct {
		name    string
		changes []Change
		rev     int64
		want    bool
	}{
		{"no changes", nil, 5, false},
		{"no history record", []Change{entry}, 9, false},
		{"reader beyond the kept revision", []Change{entry, history("4")}, 5, true},
		{"reader at the kept revision", []Change{history("5")}, 5, false},
		{"reader before the kept revision", []Change{history("5")}, 3, false},
		{"unreadable kept revision: assume the worst", []Change{history("x")}, 1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := HistoryLostBelow(tc.changes, tc.rev); got != tc.want {
				t.Errorf("HistoryLostBelow(%+v, %d) = %v, want %v", tc.changes, tc.rev, got, tc.want)
			}
		})
	}
}
