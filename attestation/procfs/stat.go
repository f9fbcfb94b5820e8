package procfs

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
)

// statStartTimeField is the 1-based index of starttime in /proc/<pid>/stat (proc(5)).
const statStartTimeField = 22

// ParseStartTime returns the start time (field 22) from the contents of /proc/<pid>/stat.
// Field 2, comm, is in parentheses and may itself contain spaces and ')', so fields are
// counted from the last ')'.
func ParseStartTime(data []byte) (uint64, error) {
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, errors.New("parse stat: no ')' closing the command name")
	}
	if bytes.IndexByte(data[:i], '(') < 0 {
		return 0, errors.New("parse stat: no '(' opening the command name")
	}
	// Fields after comm start at field 3.
	idx, n := statStartTimeField-3, 0
	for f := range bytes.FieldsSeq(data[i+1:]) {
		if n == idx {
			v, err := strconv.ParseUint(string(f), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("parse stat: start time: %w", err)
			}
			return v, nil
		}
		n++
	}
	return 0, fmt.Errorf("parse stat: %d fields after the command name, want at least %d", n, idx+1)
}
