package sds

import (
	"net"
	"sort"
)

func listenUnix(path string) (net.Listener, error) { return net.Listen("unix", path) }

func sortStrings(s []string) { sort.Strings(s) }
