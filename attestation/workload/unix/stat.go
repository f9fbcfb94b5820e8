package unix

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
)

// parseStatusGroups returns the numeric ids on the "Groups:" line of /proc/<pid>/status.
func parseStatusGroups(data []byte) ([]uint32, error) {
	for line := range bytes.Lines(data) {
		rest, ok := bytes.CutPrefix(line, []byte("Groups:"))
		if !ok {
			continue
		}
		var gids []uint32
		for f := range bytes.FieldsSeq(rest) {
			v, err := strconv.ParseUint(string(f), 10, 32)
			if err != nil {
				return nil, fmt.Errorf("parse status: groups: %w", err)
			}
			gids = append(gids, uint32(v))
		}
		return gids, nil
	}
	return nil, errors.New("parse status: no Groups line")
}
