//go:build !linux

package unixsock

import "net"

func bind(path string) (net.Listener, error) { return net.Listen("unix", path) }
